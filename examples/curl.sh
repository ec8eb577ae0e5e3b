#!/usr/bin/env bash
# curl examples for the inference server's Roboflow-compatible HTTP API.
#   examples/curl.sh [BASE_URL]           (default http://localhost:9001)
# Optional: IMAGE_URL=http://.../image.jpg for the URL forms.
set -euo pipefail
BASE="${1:-http://localhost:9001}"
MODEL="shapes-detect/1"
IMG="$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures/images/dev/01_multi_320x320.jpg"

echo "== JSON, base64 image"
printf '{"model_id":"%s","confidence":0.25,"image":{"type":"base64","value":"%s"}}' \
    "$MODEL" "$(base64 -w0 "$IMG")" |
  curl -sS -X POST "$BASE/infer/object_detection" -H 'Content-Type: application/json' --data-binary @-
echo

if [ -n "${IMAGE_URL:-}" ]; then
  echo "== JSON, image URL"
  curl -sS -X POST "$BASE/infer/object_detection" -H 'Content-Type: application/json' \
    -d "{\"model_id\":\"$MODEL\",\"image\":{\"type\":\"url\",\"value\":\"$IMAGE_URL\"}}"
  echo
  echo "== legacy route, GET ?image=<url>"
  curl -sS -G "$BASE/$MODEL" --data-urlencode "api_key=x" --data-urlencode "confidence=0.25" \
    --data-urlencode "image=$IMAGE_URL"
  echo
else
  echo "(set IMAGE_URL to try the URL forms)"
fi

echo "== legacy route, multipart upload (part named 'file')"
curl -sS -X POST "$BASE/$MODEL?api_key=x&confidence=0.25&overlap=0.45" -F "file=@$IMG"
echo

echo "== legacy route, raw base64 body"
base64 -w0 "$IMG" |
  curl -sS -X POST "$BASE/$MODEL?api_key=x&confidence=0.25" \
    -H 'Content-Type: application/x-www-form-urlencoded' --data-binary @-
echo

echo "== loaded models"
curl -sS "$BASE/model/registry"
echo
