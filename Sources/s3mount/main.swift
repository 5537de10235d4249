print("s3mount")
