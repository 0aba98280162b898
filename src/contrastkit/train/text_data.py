"""A small text set with graded similarity judgements, written for contrastkit (Apache-2.0,
like the project; no third-party text).

Every sentence is ``subject + predicate + setting`` from one of six topics; each slot has four
meanings and each meaning two wordings (e.g. "A dog" / "A puppy", "is sleeping" / "is taking a
nap"). That gives 6 x 4^3 = 384 meanings in 8 wordings each (3,072 sentences). Because the
meaning of every sentence is known, similarity judgements come by construction, STS style:

* 4: same meaning, different wording (a paraphrase);
* 1 + (number of slots with the same meaning): same topic, different meaning (1 to 3);
* 0: different topics.

Topic ids serve as class labels for kNN and linear probes. The split is by sentence (seeded).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import torch
from torch import Tensor

# topic, then one line per meaning of a slot: "slot: wording 1 / wording 2"
VOCABULARY = """
animals
  subject: A dog / A puppy
  subject: The cat / The kitten
  subject: A horse / A pony
  subject: The bird / The little bird
  predicate: is sleeping / is taking a nap
  predicate: runs quickly / is running fast
  predicate: eats its food / is eating a meal
  predicate: plays with a ball / is playing with a toy ball
  setting: in the garden / in the backyard
  setting: near the river / by the stream
  setting: on a sunny morning / early on a bright day
  setting: inside the barn / in the old shed
weather
  subject: Heavy rain / A downpour
  subject: Strong wind / A gale
  subject: Thick fog / Dense mist
  subject: Bright sunshine / Strong sunlight
  predicate: covers the city / blankets the town
  predicate: is expected tomorrow / is forecast for the next day
  predicate: delayed the flights / held up the planes
  predicate: surprised the farmers / caught the growers off guard
  setting: in the north / in the northern region
  setting: during the night / overnight
  setting: along the coast / near the shore
  setting: for the whole week / all week long
cooking
  subject: The chef / The cook
  subject: My grandmother / My grandma
  subject: A student / A young learner
  subject: The baker / The pastry maker
  predicate: prepares a soup / is making a broth
  predicate: bakes fresh bread / is baking a new loaf
  predicate: chops the vegetables / is cutting up the veggies
  predicate: tastes the sauce / samples the gravy
  setting: in a small kitchen / in a tiny kitchen
  setting: for the dinner party / for the evening guests
  setting: before noon / in the late morning
  setting: with great care / very carefully
sports
  subject: The striker / The forward
  subject: Our team / Our squad
  subject: The young runner / The teenage sprinter
  subject: The goalkeeper / The keeper
  predicate: scored a late goal / netted in the final minutes
  predicate: won the championship / took the title
  predicate: trained very hard / practised intensely
  predicate: injured a knee / hurt a knee
  setting: at the stadium / in the arena
  setting: last season / in the previous season
  setting: in front of the fans / before the supporters
  setting: despite the rain / even though it rained
travel
  subject: The tourists / The visitors
  subject: A family / A household
  subject: The pilot / The aviator
  subject: Two backpackers / A pair of hikers
  predicate: booked a hotel / reserved a room
  predicate: missed the train / did not catch the train
  predicate: visited the museum / toured the gallery
  predicate: crossed the border / went over the frontier
  setting: in the capital / in the main city
  setting: during the holidays / over the vacation
  setting: late at night / after midnight
  setting: on a tight budget / with little money
technology
  subject: The new phone / The latest smartphone
  subject: Our laptop / Our notebook computer
  subject: The software update / The system upgrade
  subject: A small robot / A tiny machine
  predicate: crashed again / failed once more
  predicate: runs much faster / performs far quicker
  predicate: uses less power / consumes less energy
  predicate: was released / came out
  setting: this week / in the last few days
  setting: in the office / at the workplace
  setting: after the patch / following the fix
  setting: for most users / for the majority of people
"""


def _parse(text: str) -> dict[str, tuple]:
    topics: dict[str, tuple] = {}
    for line in text.strip().splitlines():
        if not line.startswith(" "):
            current = topics.setdefault(line.strip(), ([], [], []))
            continue
        slot, wordings = line.strip().split(": ", 1)
        pair = tuple(w.strip() for w in wordings.split(" / "))
        current[("subject", "predicate", "setting").index(slot)].append(pair)
    return topics


#: topic -> (subjects, predicates, settings); each entry holds the two wordings of one meaning
TOPICS: dict[str, tuple] = _parse(VOCABULARY)


@dataclass
class TextSplit:
    train: list[str]
    y_train: Tensor  # topic ids
    test: list[str]
    y_test: Tensor
    pair_a: list[str]  # similarity judgements on test sentences
    pair_b: list[str]
    pair_score: Tensor  # 0..4


def all_sentences() -> list[tuple[str, tuple[int, int, int, int]]]:
    """Every sentence with its meaning ``(topic, subject, predicate, setting)``."""
    out = []
    for t, (subj, pred, sett) in enumerate(TOPICS.values()):
        for (i, s), (j, p), (k, c) in itertools.product(
            enumerate(subj), enumerate(pred), enumerate(sett)
        ):
            for ws, wp, wc in itertools.product(s, p, c):
                out.append((f"{ws} {wp} {wc}.", (t, i, j, k)))
    return out


def similarity(m1: tuple, m2: tuple) -> int:
    """Graded similarity 0..4 of two meanings (see the module docstring)."""
    if m1[0] != m2[0]:
        return 0
    if m1 == m2:
        return 4
    return 1 + sum(a == b for a, b in zip(m1[1:], m2[1:]))


def load_text_split(n_train: int = 2048, n_pairs_per_score: int = 100, seed: int = 0) -> TextSplit:
    """Seeded split of the 3,072 sentences; judged pairs drawn from the test sentences, the same
    number for each score 0..4."""
    rng = random.Random(seed)
    items = all_sentences()
    rng.shuffle(items)
    train, test = items[:n_train], items[n_train:]
    by_score: dict[int, list] = {s: [] for s in range(5)}
    groups: dict[tuple, list] = {}
    for text, m in test:
        groups.setdefault(m, []).append(text)
    paraphrased = [g for g in groups.values() if len(g) >= 2]
    while len(by_score[4]) < n_pairs_per_score:
        a, b = rng.sample(rng.choice(paraphrased), 2)
        by_score[4].append((a, b, 4))
    while min(len(by_score[s]) for s in range(4)) < n_pairs_per_score:
        (a, ma), (b, mb) = rng.sample(test, 2)
        s = similarity(ma, mb)
        if s < 4 and len(by_score[s]) < n_pairs_per_score:
            by_score[s].append((a, b, s))
    pairs = [p for s in range(5) for p in by_score[s]]
    return TextSplit(
        train=[s for s, _ in train],
        y_train=torch.tensor([m[0] for _, m in train]),
        test=[s for s, _ in test],
        y_test=torch.tensor([m[0] for _, m in test]),
        pair_a=[a for a, _, _ in pairs],
        pair_b=[b for _, b, _ in pairs],
        pair_score=torch.tensor([float(s) for _, _, s in pairs]),
    )
