#!/usr/bin/env bash
# install_profile.sh - install matdisco's SLURM profile as the user profile "slurm", so that
#   snakemake --profile slurm
# works as users type it (Snakemake looks for profile names in ./NAME,
# $XDG_CONFIG_HOME/snakemake/NAME (default ~/.config/snakemake/NAME) and /etc/xdg/snakemake/NAME).
#
# Usage: scripts/install_profile.sh [--force] [--account A] [--partition P] [--dest DIR]
#   --account A     fill in default-resources slurm_account (sbatch -A) in the installed copy
#   --partition P   fill in default-resources slurm_partition (sbatch -p) in the installed copy
#   --dest DIR      install into DIR instead of ${XDG_CONFIG_HOME:-~/.config}/snakemake/slurm
#                   (on macOS Snakemake looks in ~/Library/Application Support/snakemake/slurm)
#   --force         overwrite an existing profile without asking
# An existing config.yaml is overwritten only after a "y" answer (or with --force); the old
# file is kept as config.yaml.bak. Without a terminal to ask on, it refuses unless --force.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/../profiles/slurm/config.yaml"
dest="${XDG_CONFIG_HOME:-$HOME/.config}/snakemake/slurm"
force=0 account="" partition=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "install_profile: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --force|-f) force=1 ;;
    --account) [ $# -ge 2 ] || die "--account needs a value"; account="$2"; shift ;;
    --account=*) account="${1#*=}" ;;
    --partition) [ $# -ge 2 ] || die "--partition needs a value"; partition="$2"; shift ;;
    --partition=*) partition="${1#*=}" ;;
    --dest) [ $# -ge 2 ] || die "--dest needs a value"; dest="$2"; shift ;;
    --dest=*) dest="${1#*=}" ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

[ -f "$src" ] || die "profile not found: $src"
for v in "$account" "$partition"; do
  # SLURM names are plain words; refuse anything that would break the YAML or the sbatch line
  case "$v" in *[!A-Za-z0-9_.,-]*) die "invalid account/partition name: '$v'" ;; esac
done

target="$dest/config.yaml"
if [ -e "$target" ]; then
  if [ "$force" != 1 ]; then
    if [ -t 0 ]; then
      read -r -p "install_profile: $target exists. Overwrite it (old copy kept as config.yaml.bak)? [y/N] " answer
    else
      # no terminal: read one answer line if one is piped in, else refuse
      answer=""; read -r answer || true
    fi
    case "$answer" in
      y|Y|yes|YES) ;;
      *) echo "install_profile: kept $target unchanged (use --force to overwrite)" >&2; exit 1 ;;
    esac
  fi
  cp -p "$target" "$target.bak"
fi

mkdir -p "$dest"
tmp="$(mktemp "$dest/.config.yaml.XXXXXX")"
trap 'rm -f "$tmp" "$tmp.new"' EXIT
cp "$src" "$tmp"
if [ -n "$account" ]; then
  grep -q '^  # slurm_account: ' "$tmp" || die "no slurm_account placeholder in $src"
  sed "s|^  # slurm_account: .*|  slurm_account: \"$account\"|" "$tmp" > "$tmp.new" && mv -f "$tmp.new" "$tmp"
fi
if [ -n "$partition" ]; then
  grep -q '^  # slurm_partition: ' "$tmp" || die "no slurm_partition placeholder in $src"
  sed "s|^  # slurm_partition: .*|  slurm_partition: \"$partition\"|" "$tmp" > "$tmp.new" && mv -f "$tmp.new" "$tmp"
fi
chmod 644 "$tmp"
mv -f "$tmp" "$target"
trap - EXIT

echo "install_profile: installed $target"
[ -n "$account" ] && echo "install_profile:   slurm_account=$account"
[ -n "$partition" ] && echo "install_profile:   slurm_partition=$partition"
if [ -z "$account$partition" ]; then
  echo "install_profile:   no account/partition set: edit $target or pass --account/--partition"
fi
echo "install_profile: run the workflow with: snakemake --profile slurm"
