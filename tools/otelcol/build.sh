#!/usr/bin/env bash
# Build the test suite's OpenTelemetry Collector (otelcol-a11i) with the collector builder (ocb)
# from the Go module proxy, and print the binary's path.
#
# Idempotent: the binary is named for dist.version in builder-config.yaml; when it exists this
# prints its path and exits at once. Generated sources live in ${A11I_CACHE}/build/otelcol, never in
# the checkout. The default Go module and build caches are used, so CI can keep them between runs.
# Only the path goes to stdout; progress goes to stderr.
#
# Usage: build.sh          build if needed, print the binary's path
#        build.sh --path   print the path the binary has once built, and build nothing
set -euo pipefail

# One function, read whole before it runs: a checkout that changes this file mid-build cannot
# make bash execute a mix of the old and the new text.
main() {
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    manifest="${here}/builder-config.yaml"
    cache="${A11I_CACHE:-${HOME}/.cache/a11i}"

    # dist.version is the one place the release is written down for this script.
    version="$(sed -n 's/^  version: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "${manifest}" | head -n 1)"
    if [[ -z "${version}" ]]; then
        echo "build.sh: no dist.version in ${manifest}" >&2
        exit 1
    fi
    # A local suffix (0.165.0-2) rebuilds with changed components; the builder is the release itself.
    builder_version="v${version%%-*}"
    binary="${cache}/bin/otelcol-a11i-${version}"

    case "${1:-}" in
        --path)
            echo "${binary}"
            exit 0
            ;;
        "") ;;
        *)
            echo "usage: build.sh [--path]" >&2
            exit 2
            ;;
    esac

    if [[ -x "${binary}" ]]; then
        echo "${binary}"
        exit 0
    fi

    command -v go >/dev/null || {
        echo "build.sh: Go is needed to build the collector (go.dev/dl or the distribution's golang)" >&2
        exit 1
    }

    build_root="${cache}/build"
    mkdir -p "${cache}/bin" "${build_root}"

    # Two test runs starting at once must not build into the same directory together.
    exec 9>"${build_root}/otelcol.lock"
    flock 9
    if [[ -x "${binary}" ]]; then
        echo "${binary}"
        exit 0
    fi

    started=${SECONDS}
    echo "build.sh: building otelcol-a11i ${version} with ocb ${builder_version} (a few minutes cold)" >&2

    builder="${cache}/tools/ocb-${builder_version}/builder"
    if [[ ! -x "${builder}" ]]; then
        GOBIN="$(dirname "${builder}")" go install \
            "go.opentelemetry.io/collector/cmd/builder@${builder_version}" </dev/null
    fi

    # The empty module builder-config.yaml's `replaces` points at, instead of a test-only dependency
    # the module proxy does not serve.
    stub="${build_root}/stubs/otlpencodingextension"
    mkdir -p "${stub}"
    printf 'module %s\n\ngo 1.26\n' \
        github.com/open-telemetry/opentelemetry-collector-contrib/extension/encoding/otlpencodingextension \
        >"${stub}/go.mod"
    printf '// Package otlpencodingextension is an empty stand-in; see builder-config.yaml.\n%s\n' \
        'package otlpencodingextension' >"${stub}/stub.go"

    # Sources from an earlier, different or interrupted build would be reused by the builder.
    rm -rf "${build_root}/otelcol"
    # The builder makes an empty temporary directory on every run; keep it inside the cache.
    tmp="$(mktemp -d "${build_root}/tmp.XXXXXX")"
    trap 'rm -rf "${tmp}"' EXIT
    (
        cd "${build_root}"
        TMPDIR="${tmp}" "${builder}" --config="${manifest}" </dev/null >&2
    )

    # Publish atomically: a concurrent reader sees either no binary or the complete one.
    cp "${build_root}/otelcol/otelcol-a11i" "${binary}.tmp.$$"
    mv -f "${binary}.tmp.$$" "${binary}"
    echo "build.sh: built in $((SECONDS - started)) s" >&2
    echo "${binary}"
}

main "$@"
