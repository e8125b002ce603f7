#!/usr/bin/env bash
# Fetch a runnable Kafka broker classpath from Maven Central (no Apache
# download mirrors needed). Idempotent and atomic.
#
#   testenv/kafka/fetch.sh          -> prints the libs dir on stdout (only line)
#
# Cache: ${AGENTMEM_TESTENV_CACHE:-~/.cache/agentmem-testenv}/kafka-<version>/libs
# Version: the <kafka.version> pin in testenv/kafka/pom.xml.
# Progress goes to stderr; set AGENTMEM_TESTENV_QUIET=1 to silence Maven.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$HERE/pom.xml"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1)"
[ -n "$KAFKA_VERSION" ] || { echo "fetch.sh: no <kafka.version> in $POM" >&2; exit 1; }

CACHE_ROOT="${AGENTMEM_TESTENV_CACHE:-$HOME/.cache/agentmem-testenv}"
DEST="$CACHE_ROOT/kafka-$KAFKA_VERSION"
LIBS="$DEST/libs"

log() { echo "[kafka-fetch] $*" >&2; }

# The pom's hash is stored with the libs, so editing the pom (e.g. the log4j
# version) refetches even when the kafka version is unchanged.
POM_SUM="$(sha256sum "$POM" | cut -d' ' -f1)"
if [ -f "$LIBS/.complete" ] && [ "$(cat "$LIBS/.complete")" = "$POM_SUM" ]; then
  echo "$LIBS"
  exit 0
fi

command -v mvn >/dev/null || { echo "fetch.sh: mvn not found (apt-get install -y maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "fetch.sh: java not found (apt-get install -y openjdk-17-jre-headless)" >&2; exit 1; }

mkdir -p "$DEST"
TMP="$(mktemp -d "$DEST/.libs.tmp.XXXXXX")"
chmod 755 "$TMP"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/agentmem-kafka-pom.XXXXXX")"
trap 'rm -rf "$TMP" "$WORK"' EXIT
# Run Maven on a copy so nothing (target/ etc.) is written into the repo.
cp "$POM" "$WORK/pom.xml"

MVN_FLAGS=(-B -Dstyle.color=never -f "$WORK/pom.xml")
[ "${AGENTMEM_TESTENV_QUIET:-0}" = 1 ] && MVN_FLAGS+=(-q)

log "fetching kafka $KAFKA_VERSION jars from Maven Central into $LIBS ..."
start=$(date +%s)
if ! mvn "${MVN_FLAGS[@]}" "$DEP_PLUGIN:copy-dependencies" \
    -DincludeScope=runtime -DoutputDirectory="$TMP" -Dmdep.prependGroupId=false 2>&1 \
    | sed -u -E 's/\x1b\[[0-9;]*m//g' \
    | { grep --line-buffered -E 'Downloaded from .*\.jar|BUILD|ERROR' || true; } \
    | sed -u -E 's#^.*Downloaded from [^:]*: .*/([^/]+) \((.*)\)$#downloaded \1 (\2)#; s/^/[kafka-fetch] mvn: /' >&2
then
  log "mvn failed (rerun without AGENTMEM_TESTENV_QUIET, or run mvn -f $POM $DEP_PLUGIN:copy-dependencies by hand)"
  exit 1
fi

ls "$TMP"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 \
  || { log "kafka_2.13-$KAFKA_VERSION.jar missing after mvn"; exit 1; }
echo "$POM_SUM" > "$TMP/.complete"

# Atomic swap: a reader sees either no libs dir, the old one, or the new one.
if [ -d "$LIBS" ]; then
  OLD="$DEST/.libs.old.$$"
  mv "$LIBS" "$OLD"
  mv -T "$TMP" "$LIBS"
  rm -rf "$OLD"
else
  mv -T "$TMP" "$LIBS" 2>/dev/null || {
    # Lost a race with a concurrent fetch: fine if theirs is complete.
    [ -f "$LIBS/.complete" ] || { log "could not move libs into place"; exit 1; }
  }
fi
log "done: $(ls "$LIBS" | wc -l) jars, $(du -sh "$LIBS" | cut -f1), $(( $(date +%s) - start ))s"
echo "$LIBS"
