#!/usr/bin/env bash
# Sets up S3 event notifications for s3mount's --notification-queue: an SNS topic for the bucket,
# one SQS queue per mount subscribed to it (raw message delivery), the policies that let S3 publish
# to the topic and the topic send to the queues, and the bucket's notification configuration
# (ObjectCreated:* and ObjectRemoved:* to the topic). Prints each queue's URL, one per line: give
# each mount its own with --notification-queue URL. Safe to run again (it adds queues).
#
#   bash scripts/notifications-setup.sh BUCKET QUEUE_NAME [QUEUE_NAME...]
#   e.g. bash scripts/notifications-setup.sh my-bucket s3mount-host1 s3mount-host2
#
# Uses the aws CLI and its usual configuration (AWS_PROFILE, AWS_REGION; AWS_ENDPOINT_URL for an
# S3-compatible service with SNS and SQS, such as moto). Needs permissions for sns:CreateTopic,
# sns:SetTopicAttributes, sns:Subscribe, sqs:CreateQueue, sqs:GetQueueAttributes,
# sqs:SetQueueAttributes, s3:GetBucketNotification and s3:PutBucketNotification.
# A bucket that already sends notifications elsewhere is left alone (S3 keeps one configuration per
# bucket: merge ours into it by hand, see docs/CONFIGURATION.md).
set -euo pipefail

if [ $# -lt 2 ] || [[ "$1" == -* ]]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
command -v aws >/dev/null 2>&1 || { echo "notifications-setup: the aws CLI is needed (pip install awscli)" >&2; exit 1; }
bucket=$1
shift
# aws CLI v1 reads AWS_DEFAULT_REGION only.
if [ -n "${AWS_REGION:-}" ] && [ -z "${AWS_DEFAULT_REGION:-}" ]; then export AWS_DEFAULT_REGION=$AWS_REGION; fi
# An S3-compatible service (moto, say): every call goes to AWS_ENDPOINT_URL, whatever the CLI's version.
endpoint=()
if [ -n "${AWS_ENDPOINT_URL:-}" ]; then endpoint=(--endpoint-url "$AWS_ENDPOINT_URL"); fi
aws_() { aws "${endpoint[@]}" --output text "$@"; }

topic_name="s3mount-${bucket//./-}"
topic_arn=$(aws_ sns create-topic --name "$topic_name" --query TopicArn)
partition=$(cut -d: -f2 <<<"$topic_arn")
bucket_arn="arn:${partition}:s3:::${bucket}"
# S3 may publish to the topic for this bucket only.
topic_policy=$(cat <<EOF
{"Version": "2012-10-17", "Statement": [{"Sid": "s3mount-s3-publish", "Effect": "Allow",
  "Principal": {"Service": "s3.amazonaws.com"}, "Action": "SNS:Publish", "Resource": "${topic_arn}",
  "Condition": {"ArnLike": {"aws:SourceArn": "${bucket_arn}"}}}]}
EOF
)
aws_ sns set-topic-attributes --topic-arn "$topic_arn" --attribute-name Policy --attribute-value "$topic_policy" >/dev/null

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for name in "$@"; do
    url=$(aws_ sqs create-queue --queue-name "$name" --query QueueUrl)
    queue_arn=$(aws_ sqs get-queue-attributes --queue-url "$url" --attribute-names QueueArn --query Attributes.QueueArn)
    # The topic may send to the queue. (Policy is a JSON string inside the attributes' JSON.)
    python3 - "$queue_arn" "$topic_arn" >"$scratch/attributes.json" <<'PY'
import json, sys
queue, topic = sys.argv[1], sys.argv[2]
policy = {"Version": "2012-10-17", "Statement": [{"Sid": "s3mount-topic-send", "Effect": "Allow",
          "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage", "Resource": queue,
          "Condition": {"ArnEquals": {"aws:SourceArn": topic}}}]}
# 4 days of retention: a mount that is down that long relists at its next start anyway.
print(json.dumps({"Policy": json.dumps(policy), "MessageRetentionPeriod": "345600"}))
PY
    aws_ sqs set-queue-attributes --queue-url "$url" --attributes "file://$scratch/attributes.json" >/dev/null
    aws_ sns subscribe --topic-arn "$topic_arn" --protocol sqs --notification-endpoint "$queue_arn" \
        --attributes RawMessageDelivery=true >/dev/null
    echo "$url"
done

existing=$(aws "${endpoint[@]}" --output json s3api get-bucket-notification-configuration --bucket "$bucket")
if grep -q "$topic_arn" <<<"$existing"; then
    exit 0
fi
if grep -qE '"(TopicConfigurations|QueueConfigurations|LambdaFunctionConfigurations|EventBridgeConfiguration)"' <<<"$existing"; then
    echo "notifications-setup: bucket $bucket already has a notification configuration; add this to it by hand:" >&2
    echo "  TopicConfigurations: [{TopicArn: $topic_arn, Events: [s3:ObjectCreated:*, s3:ObjectRemoved:*]}]" >&2
    exit 1
fi
cat >"$scratch/notification.json" <<EOF
{"TopicConfigurations": [{"Id": "s3mount", "TopicArn": "${topic_arn}", "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]}
EOF
aws_ s3api put-bucket-notification-configuration --bucket "$bucket" --notification-configuration "file://$scratch/notification.json"
