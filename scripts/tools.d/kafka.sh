#!/usr/bin/env bash
# Test-only: the jars of a real Apache Kafka broker (KRaft) from Maven Central, into
# "$1/kafka/libs". The tests start it with `java -cp 'libs/*' kafka.Kafka server.properties`.
# Idempotent: a stamp records the pom it was built from, so a second run costs nothing.
set -euo pipefail
TOOLS_DIR="${1:-.tools}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
POM="$ROOT/tools/kafka/pom.xml"
DEST="$TOOLS_DIR/kafka/libs"
STAMP="$TOOLS_DIR/kafka/.pom.sha256"
want="$(sha256sum "$POM" | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && ls "$DEST"/kafka_2.13-*.jar >/dev/null 2>&1; then
    exit 0
fi
command -v java >/dev/null || { echo "kafka.sh: java (17+) is required" >&2; exit 1; }
command -v mvn >/dev/null || { echo "kafka.sh: maven (mvn) is required" >&2; exit 1; }
rm -rf "$DEST"
mkdir -p "$DEST"
if ! log="$(mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$DEST" 2>&1)"; then
    echo "$log" >&2
    echo "kafka.sh: maven could not fetch the Kafka jars (network? ~/.m2/settings.xml?)" >&2
    exit 1
fi
echo "$want" > "$STAMP"
echo "kafka.sh: $(ls "$DEST" | wc -l) jars in $DEST"
