#!/usr/bin/env python3
"""Writes queries.jsonl: the query log `bench --only replay` replays.

300 questions operators ask a plant's chat assistant, drawn from the 60
QUESTIONS below: every question once, plus 240 draws with Zipf weights
(the question of rank r is drawn with weight 1/r), shuffled; about one
asking in ten differs only in whitespace, one in ten only in case and one
in ten only in its trailing punctuation. Deterministic: a fixed-seed
64-bit LCG, no `random` module, so any Python 3 writes the same file.

    python3 tests/data/replay/make_queries.py > tests/data/replay/queries.jsonl

The counts it prints on stderr are the ones README.md states (and
tests/src/bench/replay.rs's unit test checks against the file).
"""

import json
import sys

QUESTIONS = [
    "What does alarm E-104 on the filler mean?",
    "How do I reset the conveyor after an emergency stop?",
    "What is the normal operating pressure of boiler 2?",
    "Who is on call for maintenance tonight?",
    "How do I acknowledge an alarm on the HMI?",
    "What is the lockout tagout procedure for the mixer?",
    "Why is line 3 running slower than usual?",
    "How often should the air compressor filters be changed?",
    "What does a red flashing light on the PLC mean?",
    "How do I start the cleaning cycle on tank 4?",
    "What is the maximum temperature for the oven on line 1?",
    "How do I switch the pump to manual mode?",
    "What should I do if the vibration sensor on motor 7 trips?",
    "Where is the spare fuse for the control cabinet?",
    "How do I log a near miss?",
    "What is the changeover procedure from 500 ml to 1 l bottles?",
    "How do I check the oil level in the gearbox?",
    "What is the torque setting for the capping head?",
    "How do I restart the SCADA client?",
    "Which PPE do I need in the chemical store?",
    "What is the target OEE for this shift?",
    "How do I calibrate the checkweigher?",
    "What does fault code F32 on the VFD mean?",
    "How do I bleed air out of the hydraulic system?",
    "When is the next planned shutdown?",
    "How do I replace the label roll on the labeller?",
    "What is the setpoint for the cooling water temperature?",
    "How do I report a leaking valve?",
    "What does the yellow beacon on the palletiser mean?",
    "How do I reset the light curtain on the robot cell?",
    "What is the first aid procedure for a chemical splash?",
    "How do I read the energy meter on the main switchboard?",
    "Why does the boiler keep tripping on low water?",
    "How do I clear a jam in the case packer?",
    "What is the safe working load of the overhead crane?",
    "How do I change the recipe on the batching system?",
    "What does a low suction pressure alarm on the chiller mean?",
    "How do I test the emergency stop buttons?",
    "What is the procedure for a fire alarm during night shift?",
    "How do I drain the condensate from the air receiver?",
    "Where do I find the wiring diagram for panel 12?",
    "How do I export the batch report from the historian?",
    "What is the minimum level for the glycol tank?",
    "How do I adjust the belt tension on conveyor 5?",
    "What does an earth fault alarm on the UPS mean?",
    "How do I request a permit to work?",
    "What is the shelf life of the lubricant in store?",
    "How do I isolate the steam supply to the sterilizer?",
    "Why is the compressed air dew point high?",
    "How do I replace a worn gripper pad on the robot?",
    "What is the procedure after a power failure?",
    "How do I check the pH of the wastewater?",
    "What does the code W07 on the scale mean?",
    "How do I zero the flow meter on line 2?",
    "What is the inspection interval for the safety valves?",
    "How do I switch the chiller to the standby unit?",
    "What does the blue light on the sensor mean?",
    "How do I restart the inkjet coder after a nozzle error?",
    "What is the maximum line speed for the 330 ml cans?",
    "How do I find the last maintenance record of pump 9?",
]

SEED = 0x5EED_0015
EXTRA_DRAWS = 240


class Lcg:
    """Knuth's MMIX 64-bit LCG; `next()` gives a float in [0, 1)."""

    def __init__(self, seed):
        self.x = seed & (2**64 - 1)

    def next(self):
        self.x = (self.x * 6364136223846793005 + 1442695040888963407) % 2**64
        return (self.x >> 11) / 2**53

    def below(self, n):
        return min(int(self.next() * n), n - 1)


def zipf_draw(rng, weights, total):
    u = rng.next() * total
    for i, w in enumerate(weights):
        u -= w
        if u < 0:
            return i
    return len(weights) - 1


def whitespace_variant(rng, q):
    k = rng.below(5)
    if k == 0:
        return "  " + q
    if k == 1:
        return q + " "
    if k == 2:
        return q.replace(" ", "  ", 1)
    if k == 3:
        first, rest = q.split(" ", 1)
        return first + "\t" + rest
    return q + "\n"


def case_variant(rng, q):
    return q.lower() if rng.below(3) else q.upper()


def punctuation_variant(rng, q):
    base = q.rstrip("?")
    return [base, base + "??", base + " ?"][rng.below(3)]


def main():
    rng = Lcg(SEED)
    weights = [1.0 / r for r in range(1, len(QUESTIONS) + 1)]
    total = sum(weights)
    picks = list(range(len(QUESTIONS))) + [zipf_draw(rng, weights, total) for _ in range(EXTRA_DRAWS)]
    for i in range(len(picks) - 1, 0, -1):
        j = rng.below(i + 1)
        picks[i], picks[j] = picks[j], picks[i]
    lines = []
    for p in picks:
        q = QUESTIONS[p]
        u = rng.next()
        if u < 0.10:
            q = whitespace_variant(rng, q)
        elif u < 0.20:
            q = case_variant(rng, q)
        elif u < 0.30:
            q = punctuation_variant(rng, q)
        lines.append(q)
    for q in lines:
        print(json.dumps({"query": q}))
    # The daemon's key folds whitespace only (daemon/src/cache/key.rs normalise_query).
    keys = {" ".join(q.split()) for q in lines}
    loose = {" ".join(q.split()).lower().rstrip("?!. ") for q in lines}
    print(f"lines {len(lines)}, questions {len(set(picks))}, exact strings {len(set(lines))}, "
          f"keys (whitespace folded) {len(keys)}, keys if case and trailing punctuation were folded too {len(loose)}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
