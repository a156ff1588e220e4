"""Write evitdeploy/labels/imagenet.txt: the ImageNet-1k class names, one a line, in class-index order.

Run once (`.venv/bin/python tools/make_imagenet_labels.py`); the output is committed as package data.
Source: timm's `timm/data/_info/imagenet_synsets.txt` (the class order) and
`imagenet_synset_to_lemma.txt` (WordNet lemmas), timm being Apache-2.0. A class is named by its
first lemma; the two names ImageNet uses twice get a word in brackets, so that every name is unique.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# First lemma shared by two classes: "crane" (134 the bird, 517 the machine), "maillot" (638, 639).
SAME_FIRST_LEMMA = {
    "n02012849": "crane (bird)",
    "n03126707": "crane (machine)",
    "n03710637": "maillot (dancewear)",
    "n03710721": "maillot (tank suit)",
}
OUTPUT = Path(__file__).resolve().parents[1] / "evitdeploy" / "labels" / "imagenet.txt"


def imagenet_names() -> list[str]:
    # found, not imported: importing timm pulls torchvision, which need not match our torch
    info = Path(importlib.util.find_spec("timm").submodule_search_locations[0]) / "data" / "_info"
    synsets = (info / "imagenet_synsets.txt").read_text().split()
    lemmas = dict(line.split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines() if "\t" in line)
    names = [SAME_FIRST_LEMMA.get(synset) or lemmas[synset].split(",")[0].strip() for synset in synsets]
    assert len(names) == 1000 and len(set(names)) == 1000 and all(names), "timm's ImageNet-1k files changed"
    return names


if __name__ == "__main__":
    OUTPUT.write_text("\n".join(imagenet_names()) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT}")
