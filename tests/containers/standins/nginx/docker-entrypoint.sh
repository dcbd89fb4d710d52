#!/bin/sh
set -eu
out="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
defined="$(env | cut -d= -f1 | sed 's/.*/${&}/' | tr '\n' ' ')"
for template in /etc/nginx/templates/*.template; do
  [ -e "$template" ] || continue
  name="$(basename "$template" .template)"
  envsubst "$defined" < "$template" > "$out/$name"
  echo "rendered $template to $out/$name"
done
exec "$@"
