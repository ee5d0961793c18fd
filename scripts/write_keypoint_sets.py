"""Write the official keypoint text into unipose_model/data/keypoint_sets.json.

    python scripts/write_keypoint_sets.py [--official ../shared/reference/official_keypoint_text.json]

The official UniPose demo's 28 predefined sets are data: their keypoint text goes into the file
verbatim, and so do their skeletons (converted to 0-based: person, both AP-10K sets, fly and locust
link 1-based in the official file, Animal Kingdom and car 0-based; each is checked against its
keypoint count). What the official file does not carry (category names, flip pairs, OKS sigmas,
sources, and the dataset skeletons of the sets it leaves unlinked) stays as this file has it; the
index layouts are the datasets' own, so they carry over by index. Names a set had before become
its keypoint aliases, so prompts written with them keep working. The UniKPT vocabulary
(unipose_train/data/unikpt_vocabulary.json) gets the same sets, so a dataset an official set comes
from is converted with the official names. Re-running is harmless.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "unipose_model" / "data" / "keypoint_sets.json"
UNIKPT = REPO / "unipose_train" / "data" / "unikpt_vocabulary.json"
OFFICIAL = REPO.parent / "shared" / "reference" / "official_keypoint_text.json"

# Earlier ids of this file -> the official set names.
RENAMED = {"animal_kingdom": "animal_in_AnimalKindom", "swivel_chair": "swivelchair",
           "short_sleeve_top": "short_sleeved_shirt", "long_sleeve_top": "long_sleeved_shirt",
           "short_sleeve_outwear": "short_sleeved_outwear",
           "long_sleeve_outwear": "long_sleeved_outwear",
           "short_sleeve_dress": "short_sleeved_dress", "long_sleeve_dress": "long_sleeved_dress"}
ONE_BASED = {"person", "animal_in_AP10K", "animal", "fly", "locust"}
ZERO_BASED = {"animal_in_AnimalKindom", "car"}
# Shown to users as nothing: the official car text names two CarFusion slots "none".
HIDDEN_TEXT = "none"


def norm(text: str) -> str:
    return " ".join(text.replace("_", " ").lower().split())


def category(text: str) -> str:
    return norm(text.replace("-", " "))


def zero_based(name: str, links: list, n: int) -> list:
    if not links:
        return []
    lo, hi = min(min(p) for p in links), max(max(p) for p in links)
    if name in ONE_BASED:
        assert lo >= 1 and hi <= n, (name, lo, hi, n)
        return [[i - 1, j - 1] for i, j in links]
    assert name in ZERO_BASED and lo >= 0 and hi <= n - 1, (name, lo, hi, n)
    return [list(p) for p in links]


def dump(data: dict) -> str:
    """The file's layout: one line per key of a set, lists kept on that line."""
    one = lambda v: json.dumps(v, ensure_ascii=False)
    head = ",\n".join(f"  {one(k)}: {one(v)}" for k, v in data.items() if k != "sets")
    sets = ",\n".join("    {\n" + ",\n".join(f"      {one(k)}: {one(v)}" for k, v in s.items())
                      + "\n    }" for s in data["sets"])
    return "{\n" + head + ',\n  "sets": [\n' + sets + "\n  ]\n}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official", type=Path, default=OFFICIAL)
    ap.add_argument("--out", type=Path, default=DATA)
    args = ap.parse_args()
    official = json.loads(args.official.read_text())["sets"]
    data = json.loads(DATA.read_text())
    mine = {RENAMED.get(s["id"], s["id"]): s for s in data["sets"]}
    if "animal_in_AP10K" not in mine:  # the official demo names the AP-10K set twice
        mine["animal_in_AP10K"] = dict(mine["animal"], id="animal_in_AP10K", categories=[])
    sets = []
    for name, off in official.items():
        old = mine.pop(name)
        texts = off["keypoints"]
        assert [f"a photo of {t.lower().replace('_', ' ')}" for t in texts] == off["prompts"], name
        n = len(texts)
        entry = {"id": name, "origin": "official"}
        entry["description"] = old.get("description", "")
        entry["source"] = old.get("source", "")
        entry["keypoints"] = list(texts)
        hidden = [i for i, t in enumerate(texts) if t == HIDDEN_TEXT]
        if hidden:
            entry["hidden"] = hidden
        entry["skeleton"] = zero_based(name, off["skeleton"], n) or old["skeleton"]
        entry["flip_pairs"] = old.get("flip_pairs", [])
        if old.get("sigmas") is not None:
            entry["sigmas"] = old["sigmas"]
        cats = list(old["categories"])
        for extra in (name, old["id"]):
            if category(extra) not in cats:
                cats.append(category(extra))
        entry["categories"] = cats
        aliases = dict(old.get("keypoint_aliases", {}))
        before = old["keypoints"]
        assert len(before) == n, (name, len(before), n)
        keys = {norm(t) for t in texts}
        for i, (was, now) in enumerate(zip(before, texts)):
            if norm(was) != norm(now) and i not in hidden and norm(was) not in keys:
                aliases[norm(was)] = norm(now)
        if aliases:
            entry["keypoint_aliases"] = aliases
        sets.append(entry)
    for rest in mine.values():  # the project's own sets, after the official ones
        rest.setdefault("origin", "project")
        sets.append(rest)
    data["version"] = 2
    data["comment"] = (
        "Keypoint vocabulary: predefined keypoint sets and the categories that use them. Schema: "
        "see unipose_model/vocabulary.py. Indices are 0-based. Sets with origin 'official' carry "
        "the official UniPose demo's keypoint text verbatim (written by "
        "scripts/write_keypoint_sets.py from shared/reference/official_keypoint_text.json); "
        "'project' sets were written for this project from the datasets' own index layouts.")
    data["sets"] = sets
    data["renamed_sets"] = {**data.get("renamed_sets", {}), **RENAMED}
    args.out.write_text(dump(data), encoding="utf-8")
    print(f"wrote {len(sets)} sets to {args.out}")
    if args.out == DATA:
        write_unikpt(sets)


def write_unikpt(model_sets: list) -> None:
    """The model's sets, unchanged, then the UniKPT-only ones; dataset layouts follow renames."""
    data = json.loads(UNIKPT.read_text())
    ids = {s["id"] for s in model_sets}
    own = [s for s in data["sets"] if RENAMED.get(s["id"], s["id"]) not in ids]
    data["sets"] = list(model_sets) + own
    for spec in data["datasets"].values():
        if spec.get("set"):
            spec["set"] = RENAMED.get(spec["set"], spec["set"])
        for key, set_id in (spec.get("parts") or {}).items():
            spec["parts"][key] = RENAMED.get(set_id, set_id)
    data["renamed_sets"] = {**data.get("renamed_sets", {}), **RENAMED}
    data["version"] = 2
    UNIKPT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(data['sets'])} sets to {UNIKPT}")


if __name__ == "__main__":
    main()
