#!/usr/bin/env bash
# proto.sh: generate, lint and check the OSM protobuf contract in proto/.
#
# Usage: scripts/proto.sh <command>
#   gen    regenerate the Go code next to the .proto files (make proto)
#   lint   buf lint (STANDARD + COMMENTS) and buf format check
#   fmt    rewrite the .proto files in buf's canonical format
#   check  lint, regenerate, fail if the generated code in proto/ was stale,
#          then buf breaking against the previous commit
#   tools  only build the pinned tools into .bin/
#
# buf, protoc-gen-go and protoc-gen-go-grpc are pinned in scripts/tools/go.mod
# and built from the Go module proxy into .bin/ (rebuilt when that go.mod,
# its go.sum or the Go version changes). Only local plugins are used.
#
# Environment:
#   OSM_PROTO_AGAINST  buf input for `check`'s breaking-change comparison,
#                      relative to the repository root; default
#                      .git#ref=HEAD~1,subdir=proto (the previous commit).
#                      E.g. .git#branch=main,subdir=proto on a feature branch.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${root}/.bin"
tools_dir="${root}/scripts/tools"
proto_dir="${root}/proto"

log() { printf 'proto.sh: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# build_tools builds every tool of scripts/tools/go.mod into .bin/ unless the
# stamp says the binaries there match the pinned versions.
build_tools() {
	local stamp want
	want="$(cat "${tools_dir}/go.mod" "${tools_dir}/go.sum" | sha256sum | cut -d' ' -f1) $(go env GOVERSION)"
	stamp="${bin}/.tools-stamp"
	if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]] &&
		[[ -x "${bin}/buf" && -x "${bin}/protoc-gen-go" && -x "${bin}/protoc-gen-go-grpc" ]]; then
		return 0
	fi
	log "building pinned tools into ${bin} (first run downloads buf's dependencies)"
	mkdir -p "${bin}"
	rm -f "${stamp}"
	(cd "${tools_dir}" && GOWORK=off GOFLAGS="${GOFLAGS:-} -mod=readonly" go build -o "${bin}/" tool) ||
		die "building the tools pinned in scripts/tools/go.mod failed"
	printf '%s\n' "${want}" >"${stamp}"
}

buf() {
	(cd "${proto_dir}" && "${bin}/buf" "$@")
}

cmd_gen() {
	build_tools
	# Remove generated files first so that a deleted .proto leaves no stale
	# Go behind. buf's own `clean` option would wipe the output directory,
	# which here is proto/ itself.
	find "${proto_dir}/osm" -type f -name '*.pb.go' -delete
	buf generate
	log "generated Go code in proto/"
}

cmd_lint() {
	build_tools
	buf lint || die "buf lint failed (rules: STANDARD + COMMENTS, see proto/buf.yaml)"
	buf format --diff --exit-code >&2 || die "the .proto files are not formatted: run scripts/proto.sh fmt"
	log "lint ok"
}

cmd_fmt() {
	build_tools
	buf format --write
}

# snapshot prints a checksum line for every file under proto/.
snapshot() {
	(cd "${root}" && find proto -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
}

cmd_check() {
	cmd_lint

	local before after changed
	before="$(snapshot)"
	cmd_gen
	after="$(snapshot)"
	if [[ "${before}" != "${after}" ]]; then
		# diff exits 1 when the inputs differ, which is the expected case here.
		changed="$( (diff <(printf '%s\n' "${before}") <(printf '%s\n' "${after}") || true) |
			sed -n 's/^[<>] [0-9a-f]*  //p' | LC_ALL=C sort -u)"
		log "error: the generated Go code in proto/ was stale; regenerating changed:"
		printf '  %s\n' ${changed} >&2
		if git -C "${root}" rev-parse --git-dir >/dev/null 2>&1; then
			git -C "${root}" status --porcelain -- proto/ >&2 || true
		fi
		die "run 'scripts/proto.sh gen' (or 'make proto') and commit the result"
	fi
	log "generated code is up to date"

	check_breaking
}

check_breaking() {
	local against="${OSM_PROTO_AGAINST:-}"
	if [[ -z "${against}" ]]; then
		if ! git -C "${root}" rev-parse --git-dir >/dev/null 2>&1; then
			log "skipping buf breaking: ${root} is not a git work tree"
			return 0
		fi
		if ! git -C "${root}" rev-parse --verify --quiet 'HEAD~1^{commit}' >/dev/null; then
			log "skipping buf breaking: HEAD~1 does not exist (first commit, or a shallow clone)"
			return 0
		fi
		if ! git -C "${root}" ls-tree -r --name-only 'HEAD~1' -- proto/ | grep -q '\.proto$'; then
			log "skipping buf breaking: HEAD~1 has no proto/ module (no .proto files under proto/)"
			return 0
		fi
		against=".git#ref=HEAD~1,subdir=proto"
	fi
	log "buf breaking against ${against}"
	# Run from the repository root so that OSM_PROTO_AGAINST is relative to it.
	(cd "${root}" && "${bin}/buf" breaking proto --against "${against}") ||
		die "breaking change against ${against} (rules: FILE, see proto/buf.yaml); add fields instead of changing or removing them"
	log "no breaking changes"
}

main() {
	command -v go >/dev/null || die "go is not on PATH"
	case "${1:-}" in
	gen) cmd_gen ;;
	lint) cmd_lint ;;
	fmt) cmd_fmt ;;
	check) cmd_check ;;
	tools) build_tools ;;
	*)
		sed -n '2,20s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
		exit 2
		;;
	esac
}

main "$@"
