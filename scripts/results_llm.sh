#!/usr/bin/env bash
# Quantization results on the sample language models, written to docs/RESULTS_LLM.md.
#
# From a clean Release build, for every llama2.c model in the shared models folder (every *.bin
# but the tok*.bin tokenizers): convert it to an F32 GGUF (the base), collect an importance matrix
# on its calibration text (austen_calib.txt for lit3m, tinystories_calib.txt for the others),
# quantize the base to every preset lowbit writes, with and without the imatrix (F16/BF16 only
# without: they do not use one), and evaluate every variant against the base with
# `lowbit compare` on the evaluation text (austen_eval.txt / tinystories_eval.txt): file size,
# bits per weight, perplexity, mean KL-divergence from the base, top-1 agreement, tokens/s.
#
# usage: scripts/results_llm.sh [--max-paragraphs N] [--models "stories260K lit3m"]
#                               [--chunks N] [--threads N] [--out FILE]
#   --max-paragraphs N  evaluate the first N paragraphs only (a quick check; default: all)
#   --models LIST       only these models (names without .bin)
#   --chunks N          imatrix chunks per model (default: every whole chunk of the text)
#   --threads N         worker threads (default: one per CPU)
#   --out FILE          the Markdown file to write (default: docs/RESULTS_LLM.md)
# The full run takes a long time (every preset of every model over the whole evaluation text).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
shared="${LOWBIT_SHARED:-$(cd "$root/.." && pwd)/shared}"
max_paragraphs=0
only_models=""
chunks=0
threads=0
out="$root/docs/RESULTS_LLM.md"

while [ $# -gt 0 ]; do
  case "$1" in
    --max-paragraphs) max_paragraphs=$2; shift 2 ;;
    --models) only_models=$2; shift 2 ;;
    --chunks) chunks=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "results_llm.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
command -v python3 >/dev/null || { echo "results_llm.sh: python3 is needed for the tables" >&2; exit 1; }

build="$root/build-results"
work=$(mktemp -d "${TMPDIR:-/tmp}/lowbit-results.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== clean Release build in $build" >&2
rm -rf "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target lowbit -j"$(nproc)" >/dev/null
lowbit="$build/lowbit"

thread_args=()
[ "$threads" -gt 0 ] && thread_args=(--threads "$threads")
eval_args=()
[ "$max_paragraphs" -gt 0 ] && eval_args=(--max-paragraphs "$max_paragraphs")
chunk_args=()
[ "$chunks" -gt 0 ] && chunk_args=(--chunks "$chunks")

# Every preset lowbit writes, from the list its error message gives for an unknown one.
presets=$("$lowbit" quantize /dev/null /dev/null NO-SUCH-PRESET 2>&1 |
          sed -n 's/.*supported: \([A-Z0-9_ ]*\).*/\1/p' | tr -s ' ' '\n' | grep -v '^F32$' || true)
[ -n "$presets" ] || { echo "results_llm.sh: cannot list the presets" >&2; exit 1; }

texts_of() { # model name -> "calibration evaluation"
  case "$1" in
    lit3m) echo "$shared/data/austen_calib.txt $shared/data/austen_eval.txt" ;;
    *) echo "$shared/data/tinystories_calib.txt $shared/data/tinystories_eval.txt" ;;
  esac
}

models=()
for path in "$shared"/models/*.bin; do
  name=$(basename "$path" .bin)
  case "$name" in tok*) continue ;; esac
  if [ -n "$only_models" ]; then
    case " $only_models " in *" $name "*) ;; *) continue ;; esac
  fi
  models+=("$name")
done
[ ${#models[@]} -gt 0 ] || { echo "results_llm.sh: no models selected" >&2; exit 1; }

for name in "${models[@]}"; do
  read -r calib eval_text <<<"$(texts_of "$name")"
  dir="$work/$name"
  mkdir -p "$dir"
  base="$dir/$name-F32.gguf"
  echo "== $name: F32 base, imatrix on $(basename "$calib")" >&2
  "$lowbit" quantize "$shared/models/$name.bin" "$base" F32 "${thread_args[@]}" >/dev/null
  "$lowbit" imatrix "$base" --text "$calib" -o "$dir/$name.imatrix" "${chunk_args[@]}" \
    "${thread_args[@]}" >"$dir/imatrix.log" 2>&1 || { cat "$dir/imatrix.log" >&2; exit 1; }
  grep "^chunk " "$dir/imatrix.log" | tail -n 1 >"$dir/imatrix.summary"
  variants=()
  : >"$dir/failed.txt"
  for preset in $presets; do
    for with in plain imatrix; do
      case "$with-$preset" in imatrix-F16|imatrix-BF16) continue ;; esac
      file="$dir/$name-$preset.gguf"
      args=()
      if [ "$with" = imatrix ]; then
        file="$dir/$name-$preset-imatrix.gguf"
        args=(--imatrix "$dir/$name.imatrix")
      fi
      if "$lowbit" quantize "$base" "$file" "$preset" "${args[@]}" "${thread_args[@]}" \
           >/dev/null 2>"$dir/quantize.err"; then
        variants+=("$file")
      else
        echo "$(basename "$file"): $(tail -n 1 "$dir/quantize.err")" >>"$dir/failed.txt"
      fi
    done
  done
  echo "== $name: evaluating ${#variants[@]} variants on $(basename "$eval_text")" >&2
  "$lowbit" compare "$base" "${variants[@]}" --text "$eval_text" --json "${eval_args[@]}" \
    "${thread_args[@]}" >"$dir/compare.json"
done

mkdir -p "$(dirname "$out")"
python3 - "$work" "$out" "$max_paragraphs" "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  "$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || uname -m)" \
  "${models[@]}" <<'EOF'
import json, os, sys, datetime

work, out, max_paragraphs, commit, cpu = sys.argv[1:6]
models = sys.argv[6:]

def variant_label(path, name):
    stem = os.path.basename(path)[len(name) + 1:-len(".gguf")]
    preset, _, tag = stem.partition("-")
    return preset, tag == "imatrix"

lines = ["# Quantization results on the sample language models", "",
         "Written by `scripts/results_llm.sh` (do not edit by hand) on %s, commit %s, %s." %
         (datetime.date.today().isoformat(), commit, cpu), "",
         "Each model is converted to an F32 GGUF (the base), an importance matrix is collected on its",
         "calibration text (`lowbit imatrix`), and the base is quantized to every preset with and",
         "without it. `lowbit compare` evaluates every variant on the evaluation text by the",
         "perplexity protocol of `shared/golden/llama/README.md` (paragraphs, BOS first, each from",
         "an empty KV cache): KLD is the mean KL-divergence of the variant's next-token",
         "distribution from the base's, top-1 the share of positions whose most likely token agrees",
         "with the base's. Bits per weight are tensor bytes over tensor elements (norms included).",
         "Tokens/s are single-run figures on a shared machine: noisy."]
if max_paragraphs != "0":
    lines += ["", "**Partial run: the first %s paragraphs of each evaluation text only.**" % max_paragraphs]
for name in models:
    d = os.path.join(work, name)
    with open(os.path.join(d, "compare.json")) as f:
        data = json.load(f)
    rows = data["rows"]
    summary = open(os.path.join(d, "imatrix.summary")).read().strip()
    base = rows[0]
    lines += ["", "## %s" % name, "",
              "Evaluation text `%s`: %d paragraphs, %d scored tokens. Imatrix: %s." %
              (os.path.basename(data["text"]), base.get("paragraphs", 0), base.get("scored_tokens", 0),
               summary.replace("chunk ", "last chunk ")), "",
              "| variant | imatrix | size (bytes) | bits/weight | perplexity | KLD mean | top-1 % | tokens/s |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(rows):
        if i == 0:
            label, im = "F32 (base)", False
        else:
            label, im = variant_label(r["model"], name)
        if not r.get("ok"):
            lines.append("| %s | %s | failed | | | | | |" % (label, "yes" if im else ""))
            continue
        kld = "%.6f" % r["kld_mean"] if "kld_mean" in r else "-"
        top1 = "%.2f" % (100 * r["top1_agreement"]) if "top1_agreement" in r else "-"
        lines.append("| %s | %s | %d | %.3f | %.4f | %s | %s | %.0f |" % (
            label, "yes" if im else "", r["file_bytes"], r["bits_per_weight"], r["perplexity"],
            kld, top1, r["tokens_per_second"]))
    failed = open(os.path.join(d, "failed.txt")).read().strip()
    if failed:
        lines += ["", "Could not be written:", ""] + ["- " + l for l in failed.splitlines()]
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
EOF
echo "wrote $out" >&2
