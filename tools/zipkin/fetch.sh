#!/usr/bin/env bash
# Fetch the Zipkin server the waterfall test stores traces in (its executable jar, which carries
# the UI) from Maven Central with Maven, into ${A11I_CACHE}/bin, and print the jar's path.
#
# Idempotent: when the jar is there this prints its path and exits at once. It needs Java 17+
# to run and Maven to fetch (`make system` installs both from Debian). Only the path goes to
# stdout; Maven's output goes to stderr.
#
# Usage: fetch.sh          fetch if needed, print the jar's path
#        fetch.sh --path   print the path the jar has once fetched, and fetch nothing
set -euo pipefail

main() {
    # The one place the release is written down (tests/support/zipkin.py asks this script).
    version="3.5.1"
    cache="${A11I_CACHE:-${HOME}/.cache/a11i}"
    jar="${cache}/bin/zipkin-server-${version}-exec.jar"

    case "${1:-}" in
        --path)
            echo "${jar}"
            exit 0
            ;;
        "") ;;
        *)
            echo "usage: fetch.sh [--path]" >&2
            exit 2
            ;;
    esac

    if [[ -f "${jar}" ]]; then
        echo "${jar}"
        exit 0
    fi
    command -v mvn >/dev/null || {
        echo "fetch.sh: Maven is needed to fetch the Zipkin server (apt-get install maven)" >&2
        exit 1
    }

    mkdir -p "${cache}/bin"
    # Two test runs starting at once must not fetch into the same place together.
    exec 9>"${cache}/bin/zipkin.lock"
    flock 9
    if [[ -f "${jar}" ]]; then
        echo "${jar}"
        exit 0
    fi

    echo "fetch.sh: fetching io.zipkin:zipkin-server:${version} (exec jar, about 130 MB)" >&2
    tmp="$(mktemp -d "${cache}/bin/zipkin.XXXXXX")"
    trap 'rm -rf "${tmp}"' EXIT
    mvn -q -B dependency:copy "-Dartifact=io.zipkin:zipkin-server:${version}:jar:exec" \
        "-DoutputDirectory=${tmp}" </dev/null >&2
    # Publish atomically: a concurrent reader sees either no jar or the complete one.
    mv -f "${tmp}/zipkin-server-${version}-exec.jar" "${jar}"
    echo "${jar}"
}

main "$@"
