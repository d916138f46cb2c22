#!/usr/bin/env bash
# Regenerate the shipped prompts: prompts/<name>.wav and prompts/manifest.txt.
#
# A developer's script, not part of CI: the WAVs it writes are committed, and
# the binary embeds them (src/media/prompts.rs), so nothing here runs at build
# or test time. Run it again only when a prompt's text changes, then commit
# the WAVs and the manifest together.
#
# Every WAV is 8000 Hz, mono, 16-bit signed PCM (what G.711 carries, so the
# bridge never resamples), and its length is a whole number of 20 ms frames
# (160 samples) so the last RTP frame is not padded. The output is
# deterministic (espeak-ng is, and sox runs without dither), which matters:
# callers identify a prompt by matching its G.711 frames exactly.
#
# The names must stay those of PromptId::as_str in src/media/prompts.rs.
set -euo pipefail

cd "$(dirname "$0")/.."
out=prompts

if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
    apt-get install -y espeak-ng sox
fi

# name|text, in PromptId::ALL order.
prompts=(
    "welcome|Welcome to the dial-in conference service. Please enter your conference ID, followed by the pound key."
    "not-valid|That conference ID is not valid. Please try again."
    "no-input|Sorry, we did not get any input."
    "goodbye|Goodbye."
    "joining|Joining the meeting."
    "first-person|You are the first person in the meeting."
)

voice=en-us # a clear English voice
speed=150   # words per minute; espeak-ng's default of 175 is hurried on a phone line
frame=160   # samples in 20 ms at 8000 Hz

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

manifest="$tmp/manifest.txt"
{
    echo "# The prompts dialin ships, made by scripts/gen-prompts.sh with espeak-ng ($voice, $speed wpm)."
    echo "# Each file is 8000 Hz, mono, 16-bit PCM, a whole number of 20 ms frames."
    echo "# --prompts DIR replaces them with recordings of the same names and format."
    echo "# name	file	duration_ms	text"
} >"$manifest"

for entry in "${prompts[@]}"; do
    name=${entry%%|*}
    text=${entry#*|}
    espeak-ng -v "$voice" -s "$speed" -w "$tmp/$name.raw.wav" "$text"
    # -D: no dither, so silence stays digital zero and reruns give the same bytes.
    # gain -n -3: peak at -3 dBFS, loud enough on a phone and clear of G.711 clipping.
    sox -D "$tmp/$name.raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$tmp/$name.8k.wav" \
        gain -n -3 rate -v 8000
    samples=$(soxi -s "$tmp/$name.8k.wav")
    pad=$(((frame - samples % frame) % frame))
    sox -D "$tmp/$name.8k.wav" "$out/$name.wav" pad 0 "${pad}s"
    samples=$(soxi -s "$out/$name.wav")
    if ((samples % frame != 0)); then
        echo "gen-prompts: $out/$name.wav has $samples samples, not a multiple of $frame" >&2
        exit 1
    fi
    printf '%s\t%s\t%d\t%s\n' "$name" "$name.wav" $((samples / 8)) "$text" >>"$manifest"
done

cp "$manifest" "$out/manifest.txt"
echo "gen-prompts: wrote $(( ${#prompts[@]} )) prompts and $out/manifest.txt"
