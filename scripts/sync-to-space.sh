#!/usr/bin/env bash
# Push what the Hugging Face Space needs, and nothing else, to the Space's git repository.
#
# Run it from inside the project's git checkout (CI runs it from .github/workflows/sync-space.yml):
#
#     SPACE_ID=<user>/<space> HF_TOKEN=hf_... bash scripts/sync-to-space.sh
#     DRY_RUN=1 bash scripts/sync-to-space.sh        # build and check only: no token, no network, no push
#
# What is shipped: the paths in SHIP_PATHS below, as committed at SOURCE_REF (default HEAD). Uncommitted changes are
# never shipped, and neither are tests/, .github/, .ci/, scripts/, space/, pyproject.toml or any benchmark artifact:
# the Space installs requirements.txt and runs app.py from the repository root, where medcot/ is importable.
# The files are exported with `git archive` into a temporary directory (so `export-ignore` attributes are honoured);
# the caller's checkout is left untouched.
#
# History policy: the Space does not mirror the GitHub history. Each sync makes ONE new commit with no parent, whose
# message names the source commit (a `Source-Commit: <sha>` trailer), and force-pushes it to the Space's branch
# (SPACE_BRANCH, default main). Whatever was there before, edits made in the Space's web UI included, is replaced;
# the Space repository stays one commit deep and never receives files that were once committed and later removed.
# When the tree to ship is identical to the Space's current commit, nothing is pushed (the Space is not rebuilt).
# The push uses --force-with-lease against the commit seen at the start, so a concurrent change makes it fail.
#
# Size guard: the Hub refuses plain-git files over 10 MB. Before anything is pushed, every file to ship that is over
# MAX_FILE_MB (default 10, in MiB) and not tracked by Git LFS (`git check-attr filter` is not `lfs`, attributes
# from the shipped .gitattributes) is listed with its size, and the script exits with status 2. LFS-tracked files are
# shipped through LFS and need git-lfs installed.
#
# Environment:
#   SPACE_ID      <owner>/<name> of the Space; required unless SPACE_REMOTE is set
#   HF_TOKEN      Hugging Face token with write access to the Space; required for the default remote. It is never
#                 printed, put in a URL or on a command line: git reads it from the environment through a credential
#                 helper configured in the temporary repository.
#   SPACE_REMOTE  push here instead of https://huggingface.co/spaces/$SPACE_ID (a URL or a path: the tests use a
#                 local bare repository)
#   SPACE_BRANCH  branch of the Space to replace (default main)
#   SOURCE_REF    commit to ship (default HEAD)
#   MAX_FILE_MB   size limit for files not in LFS, in MiB (default 10)
#   DRY_RUN       1: stop after building and checking, push nothing
#
# Exit status: 0 pushed, already up to date, or dry run; 1 usage or git error; 2 refused (oversize file).
set -euo pipefail

# Everything the Space needs; missing optional entries are skipped, missing REQUIRED_PATHS are an error.
SHIP_PATHS=(app.py medcot requirements.txt README.md LICENSE .gitattributes)
REQUIRED_PATHS=(app.py medcot requirements.txt README.md)

log() { printf 'sync-to-space: %s\n' "$*"; }
die() {
    printf 'sync-to-space: error: %s\n' "$*" >&2
    exit 1
}

repo_root="$(git rev-parse --show-toplevel 2>/dev/null)" || die "run this from inside the project's git checkout"
cd "$repo_root"

source_ref="${SOURCE_REF:-HEAD}"
source_sha="$(git rev-parse --verify --quiet "${source_ref}^{commit}")" || die "SOURCE_REF '$source_ref' is not a commit"
branch="${SPACE_BRANCH:-main}"
git check-ref-format --branch "$branch" >/dev/null 2>&1 || die "SPACE_BRANCH '$branch' is not a valid branch name"
max_mb="${MAX_FILE_MB:-10}"
[[ $max_mb =~ ^[1-9][0-9]*$ ]] || die "MAX_FILE_MB must be a positive whole number, not '$max_mb'"
max_bytes=$((max_mb * 1024 * 1024))
dry_run="${DRY_RUN:-0}"

if [[ -n "${SPACE_REMOTE:-}" ]]; then
    remote="$SPACE_REMOTE"
elif [[ -n "${SPACE_ID:-}" ]]; then
    [[ $SPACE_ID =~ ^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
        die "SPACE_ID '$SPACE_ID' is not of the form <owner>/<name>"
    remote="https://huggingface.co/spaces/$SPACE_ID"
    if [[ $dry_run != 1 && -z "${HF_TOKEN:-}" ]]; then
        die "HF_TOKEN is not set (a Hugging Face token with write access to $SPACE_ID)"
    fi
elif [[ $dry_run == 1 ]]; then
    remote="(none: dry run)"
else
    die "set SPACE_ID=<owner>/<name> (or SPACE_REMOTE) to say where to push"
fi

for path in "${REQUIRED_PATHS[@]}"; do
    git cat-file -e "$source_sha:$path" 2>/dev/null || die "'$path' is not in commit $source_sha; the Space needs it"
done
present=()
for path in "${SHIP_PATHS[@]}"; do
    if git cat-file -e "$source_sha:$path" 2>/dev/null; then
        present+=("$path")
    fi
done

work="$(mktemp -d "${TMPDIR:-/tmp}/sync-to-space.XXXXXX")"
trap 'rm -rf "$work"' EXIT
stage="$work/space"
mkdir "$stage"
git archive --format=tar "$source_sha" -- "${present[@]}" | tar -x -C "$stage"

export GIT_TERMINAL_PROMPT=0
git -C "$stage" init --quiet --initial-branch="$branch"
git -C "$stage" config core.autocrlf false

# Size guard and LFS inventory, using the attributes of the tree being shipped.
oversize=()
lfs_files=()
total_bytes=0
log "files to ship from $source_sha:"
while IFS= read -r -d '' file; do
    file="${file#./}"
    size="$(wc -c <"$stage/$file")"
    size="${size//[[:space:]]/}"
    total_bytes=$((total_bytes + size))
    filter="$(git -C "$stage" check-attr filter -- "$file")"
    filter="${filter##*: }"
    if [[ $filter == lfs ]]; then
        printf '  %10d  %s (lfs)\n' "$size" "$file"
        lfs_files+=("$file")
        if ((size < 1024)) && grep -q '^version https://git-lfs.github.com/spec/' "$stage/$file"; then
            die "'$file' is an LFS pointer without its content; run 'git lfs pull' first"
        fi
    else
        printf '  %10d  %s\n' "$size" "$file"
        if ((size > max_bytes)); then
            oversize+=("$(awk -v b="$size" -v f="$file" 'BEGIN { printf "%s (%.1f MB, %d bytes)", f, b / 1048576, b }')")
        fi
    fi
done < <(cd "$stage" && find . -path ./.git -prune -o -type f -print0 | sort -z)

if ((${#oversize[@]})); then
    {
        printf 'sync-to-space: refusing to push: %d file(s) over %d MB are not tracked by Git LFS:\n' \
            "${#oversize[@]}" "$max_mb"
        printf '  %s\n' "${oversize[@]}"
        printf "The Hub rejects such files. Track them with 'git lfs track <pattern>' (and commit .gitattributes),\n"
        printf 'or keep them out of the Space. Nothing was pushed.\n'
    } >&2
    exit 2
fi

if ((${#lfs_files[@]})); then
    git lfs version >/dev/null 2>&1 || die "git-lfs is needed to push the LFS files (${lfs_files[*]}); install it"
    git -C "$stage" lfs install --local >/dev/null
    git -C "$stage" config lfs.locksverify false # the Hub has no LFS locking API
fi

git -C "$stage" add --all --force .
tree="$(git -C "$stage" write-tree)"
log "tree $tree: $total_bytes bytes in all, ${#lfs_files[@]} through LFS"

if [[ $dry_run == 1 ]]; then
    log "dry run: would replace '$branch' of $remote with one commit of this tree; nothing pushed"
    exit 0
fi

# The token stays in the environment: the helper prints it to git on request. `credential.helper=` first clears
# any helper configured globally, so no other helper sees or stores it.
git -C "$stage" config credential.helper ''
# shellcheck disable=SC2016 # expanded by the shell git starts for the helper, not here
git -C "$stage" config --add credential.helper \
    '!f() { test "$1" = get && test -n "$HF_TOKEN" && printf "username=hf\npassword=%s\n" "$HF_TOKEN"; }; f'

remote_line="$(git -C "$stage" ls-remote "$remote" "refs/heads/$branch")" ||
    die "cannot read the Space repository (check SPACE_ID / SPACE_REMOTE and HF_TOKEN)"
remote_sha="${remote_line%%[[:space:]]*}"
if [[ -n $remote_sha ]]; then
    git -C "$stage" fetch --quiet --depth=1 --no-tags "$remote" "refs/heads/$branch" ||
        die "cannot fetch '$branch' from the Space repository"
    if [[ "$(git -C "$stage" rev-parse 'FETCH_HEAD^{tree}')" == "$tree" ]]; then
        log "the Space's '$branch' ($remote_sha) already has this tree; nothing pushed"
        exit 0
    fi
fi

origin="${GITHUB_REPOSITORY:-$(basename "$repo_root")}"
message="Sync from $origin@${source_sha:0:12}

Replaces the Space's history with this one commit (scripts/sync-to-space.sh).

"
if [[ -n "${GITHUB_SERVER_URL:-}" && -n "${GITHUB_REPOSITORY:-}" ]]; then
    message+="Source: $GITHUB_SERVER_URL/$GITHUB_REPOSITORY/commit/$source_sha
"
fi
message+="Source-Commit: $source_sha"

commit="$(
    GIT_AUTHOR_NAME="${GIT_AUTHOR_NAME:-medcot-space-sync}" \
        GIT_AUTHOR_EMAIL="${GIT_AUTHOR_EMAIL:-medcot-space-sync@users.noreply.huggingface.co}" \
        GIT_COMMITTER_NAME="${GIT_COMMITTER_NAME:-medcot-space-sync}" \
        GIT_COMMITTER_EMAIL="${GIT_COMMITTER_EMAIL:-medcot-space-sync@users.noreply.huggingface.co}" \
        git -C "$stage" commit-tree "$tree" -m "$message"
)"
git -C "$stage" update-ref "refs/heads/$branch" "$commit"

log "pushing $commit (source $source_sha) to '$branch' of $remote"
git -C "$stage" push --quiet --force-with-lease="refs/heads/$branch:$remote_sha" "$remote" \
    "refs/heads/$branch:refs/heads/$branch" || die "push to the Space repository failed"
log "done: the Space's '$branch' is now $commit"
