# fish completion for s3mount (installed as /usr/share/fish/vendor_completions.d/s3mount.fish).
# Written by hand from `s3mount --help`; Tests/integration/test_completions.py checks that every
# option of --help is here.

function __s3mount_stats
    set -l words (commandline -opc)
    test (count $words) -ge 2; and test "$words[2]" = stats
end

function __s3mount_no_positional
    # True while neither the bucket nor `stats` has been given.
    set -l words (commandline -opc)
    set -l takes_value -o --endpoint-url --region --profile --prefix --uid --gid --file-mode --dir-mode \
        --metadata --metadata-ttl --log-file --spool-dir --credentials-file --stall-timeout \
        --read-retry-time --write-retry-time --cache --max-cache-size --read-part-size \
        --read-concurrency --max-read-memory --walk-read-ahead --read-ahead --metrics-address
    set -l skip 0
    for w in $words[2..-1]
        if test $skip = 1
            set skip 0
        else if contains -- $w $takes_value
            set skip 1
        else if not string match -q -- '-*' $w
            return 1
        end
    end
    return 0
end

function __s3mount_profiles
    for f in (set -q AWS_SHARED_CREDENTIALS_FILE; and echo $AWS_SHARED_CREDENTIALS_FILE; or echo ~/.aws/credentials) \
             (set -q AWS_CONFIG_FILE; and echo $AWS_CONFIG_FILE; or echo ~/.aws/config)
        test -r $f; and string replace -rf '^\s*\[(?:profile\s+)?([^\]]+)\].*' '$1' <$f
    end | sort -u
end

complete -c s3mount -f
complete -c s3mount -n __s3mount_no_positional -a stats -d 'print the request statistics of a mount'
complete -c s3mount -n 'not __s3mount_no_positional' -a '(__fish_complete_directories)' -d 'mount point'

complete -c s3mount -n 'not __s3mount_stats' -l endpoint-url -x -d 'S3-compatible endpoint (also AWS_ENDPOINT_URL)'
complete -c s3mount -n 'not __s3mount_stats' -l region -x -d 'bucket region'
complete -c s3mount -n 'not __s3mount_stats' -l force-path-style -d 'path-style requests (MinIO, Ceph, moto)'
complete -c s3mount -n 'not __s3mount_stats' -l profile -x -a '(__s3mount_profiles)' -d 'profile from ~/.aws'
complete -c s3mount -n 'not __s3mount_stats' -l no-sign-request -d 'anonymous access to a public bucket'
complete -c s3mount -n 'not __s3mount_stats' -l prefix -x -d 'mount only keys under PREFIX'
complete -c s3mount -n 'not __s3mount_stats' -l read-only -d 'refuse every change (EROFS)'
complete -c s3mount -n 'not __s3mount_stats' -l uid -x -a '(__fish_complete_users)' -d 'owner of objects that carry none'
complete -c s3mount -n 'not __s3mount_stats' -l gid -x -a '(__fish_complete_groups)' -d 'group of objects that carry none'
complete -c s3mount -n 'not __s3mount_stats' -l file-mode -x -d 'permission bits of files that carry none (0644)'
complete -c s3mount -n 'not __s3mount_stats' -l dir-mode -x -d 'permission bits of directories that carry none (0755)'
complete -c s3mount -n 'not __s3mount_stats' -l allow-other -d 'let other users access the mount'
complete -c s3mount -n 'not __s3mount_stats' -l allow-root -d 'let root access the mount'
complete -c s3mount -n 'not __s3mount_stats' -l metadata -x -a 'index head none' -d 'where modes, owners, mtimes, symlinks live'
complete -c s3mount -n 'not __s3mount_stats' -l metadata-ttl -x -a '0 60 indefinite' -d 'seconds listings and attributes are trusted'
complete -c s3mount -n 'not __s3mount_stats' -l log-file -r -F -d 'write the log here'
complete -c s3mount -n 'not __s3mount_stats' -l spool-dir -x -a '(__fish_complete_directories)' -d 'where files being written wait for upload'
complete -c s3mount -n 'not __s3mount_stats' -l credentials-file -r -F -d 'AWS shared-credentials file (chmod 600)'
complete -c s3mount -n 'not __s3mount_stats' -l no-upload-checksums -d 'send uploads without the CRC-32 S3 verifies'
complete -c s3mount -n 'not __s3mount_stats' -l stall-timeout -x -d 'seconds a stalled request waits before a retry (10)'
complete -c s3mount -n 'not __s3mount_stats' -l read-retry-time -x -d 'seconds of retries before a read fails (20)'
complete -c s3mount -n 'not __s3mount_stats' -l write-retry-time -x -d 'seconds of retries before an upload fails (60)'
complete -c s3mount -n 'not __s3mount_stats' -l no-guess-content-type -d 'upload everything as application/octet-stream'
complete -c s3mount -n 'not __s3mount_stats' -l cache -x -a '(__fish_complete_directories)' -d 'keep file data read once on local disk'
complete -c s3mount -n 'not __s3mount_stats' -l max-cache-size -x -d 'bound of --cache (5G)'
complete -c s3mount -n 'not __s3mount_stats' -l read-part-size -x -d 'ranged GET size of a sequential reader (8M)'
complete -c s3mount -n 'not __s3mount_stats' -l read-concurrency -x -d 'parts one reader keeps in flight (10)'
complete -c s3mount -n 'not __s3mount_stats' -l max-read-memory -x -d 'read buffers of all readers together (256M)'
complete -c s3mount -n 'not __s3mount_stats' -l walk-read-ahead -x -d 'files fetched ahead of a directory walk (8)'
complete -c s3mount -n 'not __s3mount_stats' -l read-ahead -x -d 'kernel read-ahead of the mount in KiB (4096)'
complete -c s3mount -n 'not __s3mount_stats' -l metrics-address -x -d 'serve Prometheus metrics at HOST:PORT'
complete -c s3mount -n 'not __s3mount_stats' -s d -l debug -d 'one log line per S3 request and FUSE operation'
complete -c s3mount -n 'not __s3mount_stats' -s f -l foreground -d 'stay attached, log to stderr'
complete -c s3mount -n 'not __s3mount_stats' -s o -x -d 'options in fstab form: ro,allow_other,uid=1000,endpoint_url=URL,...' \
    -a '(__fish_complete_list , "echo ro\nallow_other\nallow_root\nuid=\ngid=\nfile_mode=\ndir_mode=\nendpoint_url=\nregion=\nprofile=\nprefix=\nforce_path_style\nno_sign_request\nno_upload_checksums\nno_guess_content_type\nstall_timeout=\nread_retry_time=\nwrite_retry_time=\nmetadata_ttl=\nmetadata=\ndebug\nforeground\nlog_file=\nspool_dir=\nmetrics_address=\ncredentials_file=\nread_ahead=\ncache=\nmax_cache_size=\nread_part_size=\nread_concurrency=\nmax_read_memory=\nwalk_read_ahead=\n_netdev\nnofail\nnoauto\nx-systemd.automount")'
complete -c s3mount -n 'not __s3mount_stats' -s h -l help -d 'show the usage'
complete -c s3mount -n 'not __s3mount_stats' -l version -d 'show the version and the commit'
