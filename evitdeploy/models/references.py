"""Every trained reference in one folder, with the data that goes with it (for the README's commands).

python -m evitdeploy.models.references [FOLDER]
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from evitdeploy.models.trained import digit_mosaics, digits_checkpoint, digits_images, mosaic_checkpoint
from evitdeploy.models.trained_sam import promptable_checkpoint, promptable_data


def write_datasets(folder: Path, *, digits: Optional[int] = None, mosaics: int = 8, mosaic_size: tuple = (128, 256), promptable: int = 4) -> dict:
    """The trained references' held-out data as labelled datasets on disk, in the layouts `eval`
    reads: digits as an ImageFolder (folders 0..9, classes.txt), digit mosaics as images/ + masks/
    (PNG label maps, 10 the background), the promptable model's mosaics as COCO-style JSON (one
    instance per digit, RLE masks). Returns {"digits", "mosaics", "promptable"}: their folders."""
    from PIL import Image

    folder = Path(folder)
    images, labels = digits_images("test")
    digits_root = folder / "digits"
    for index in range(10):
        (digits_root / str(index)).mkdir(parents=True, exist_ok=True)
    (digits_root / "classes.txt").write_text("".join(f"{index}\n" for index in range(10)))
    for number, (image, label) in enumerate(zip(images[:digits], labels[:digits])):
        Image.fromarray(image).save(digits_root / str(int(label)) / f"{number:05d}.png")
    photos, label_maps = digit_mosaics(mosaics, *mosaic_size, seed=2, split="test")
    mosaic_root = folder / "mosaics"
    (mosaic_root / "images").mkdir(parents=True, exist_ok=True)
    (mosaic_root / "masks").mkdir(exist_ok=True)
    for number, (photo, label_map) in enumerate(zip(photos, label_maps)):
        Image.fromarray(photo).save(mosaic_root / "images" / f"{number:04d}.png")
        Image.fromarray(label_map.astype(np.uint8)).save(mosaic_root / "masks" / f"{number:04d}.png")
    from evitdeploy.models.trained_sam import mosaic_instances

    return {"digits": digits_root, "mosaics": mosaic_root, "promptable": write_coco(folder / "promptable", *mosaic_instances(promptable, seed=2, split="test"))}


def write_coco(folder: Path, photos: np.ndarray, instances: list) -> Path:
    """Photos and their instances ({"mask", "box"} per instance) as a COCO-style dataset folder:
    images/ and annotations.json (RLE segmentations)."""
    from PIL import Image
    from pycocotools import mask as coco_mask

    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index, (photo, found) in enumerate(zip(photos, instances), start=1):
        name = f"{index:05d}.png"
        Image.fromarray(photo).save(folder / "images" / name)
        images.append({"id": index, "file_name": name, "height": int(photo.shape[0]), "width": int(photo.shape[1])})
        for instance in found:
            rle = coco_mask.encode(np.asfortranarray(instance["mask"].astype(np.uint8)))
            x0, y0, x1, y1 = (int(v) for v in instance["box"])  # inclusive pixel bounds
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
                    "area": int(instance["mask"].sum()),
                    "iscrowd": 0,
                    "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
                }
            )
    import json

    (folder / "annotations.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "digit"}]}))
    return folder


def main() -> None:
    """`python -m evitdeploy.models.references [FOLDER]`: train (or find) the references, copy them
    into FOLDER and write the data that goes with them, so the README's commands run by hand."""
    import sys

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "trained-references")
    folder.mkdir(parents=True, exist_ok=True)
    say = lambda step: print(f"… {step}", flush=True)  # noqa: E731 (a one-line progress printer, named for the calls below)
    import shutil

    for name, checkpoint in (
        ("digits_b0", digits_checkpoint(progress=say)),
        ("digits_b1", digits_checkpoint(progress=say, family="b1")),
        ("mosaic_seg_b0", mosaic_checkpoint(progress=say)),
        ("mosaic_seg_b1", mosaic_checkpoint(progress=say, family="b1")),
        ("sam_tiny_digits", promptable_checkpoint(progress=say)),
    ):
        shutil.copyfile(checkpoint, folder / f"{name}.safetensors")
        print(f"{folder / f'{name}.safetensors'} (from {checkpoint})")
    for split in ("train", "test"):
        images, labels = digits_images(split)
        np.savez(folder / f"digits_{split}.npz", image=images, label=labels)
    photos, label_maps = digit_mosaics(16, 512, 1024, seed=1, split="train")
    np.savez(folder / "mosaics_train_512x1024.npz", image=photos)
    photos, label_maps = digit_mosaics(8, 512, 1024, seed=2, split="test")
    np.savez(folder / "mosaics_test_512x1024.npz", image=photos, label=label_maps)
    np.savez(folder / "mosaics_sam_256.npz", image=promptable_data(16, seed=1, split="train")[0])  # efficientvit_sam_tiny's
    print(f"calibration and test data (.npz, uint8 photos under 'image'): {folder}")
    found = write_datasets(folder / "datasets", mosaic_size=(512, 1024))
    print(
        f"labelled datasets for `evitdeploy eval --dataset`: {found['digits']} (ImageFolder), {found['mosaics']} (images/ + masks/), {found['promptable']} (COCO JSON)"
    )


if __name__ == "__main__":
    main()
