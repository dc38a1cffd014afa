"""Regenerates the bad-data corpus (run from this folder: python3 make_corpus.py).

Independent of spread's writer: tables are packed with Python msgpack in DIALS' layout
["dials::af::reflection_table", version, {"identifiers", "nrows", "data"}].
"""
import json, struct, msgpack

def table(columns, nrows=2, version=1, tag="dials::af::reflection_table"):
    return msgpack.packb([tag, version, {"identifiers": {0: "shot-0"}, "nrows": nrows, "data": columns}])

def ints(values):
    return ["int", [len(values), struct.pack(f"<{len(values)}i", *values)]]

def miller(rows):
    return ["cctbx::miller::index<>", [len(rows), b"".join(struct.pack("<3i", *r) for r in rows)]]

def shoebox(boxes):
    blob = b""
    for bbox, data in boxes:
        blob += struct.pack("<I6i", 0, *bbox)
        if data is None:
            blob += b"\x00"
            continue
        n = len(data)
        blob += b"\x02" + struct.pack(f"<{n}f", *data) + bytes([5] * n) + struct.pack(f"<{n}f", *([0.0] * n))
    return ["Shoebox<>", [len(boxes), blob]]

good = {"id": ints([0, 0]), "miller_index": miller([(1, 2, 3), (-1, 0, 4)]),
        "shoebox": shoebox([((0, 2, 0, 1, 0, 1), [3.0, 4.0]), ((5, 6, 5, 6, 0, 1), [7.0])])}
open("truncated.refl", "wb").write(table(good)[:-7])
open("wrong_magic.refl", "wb").write(table(good, tag="dials::af::shoebox_table"))
open("unknown_version.refl", "wb").write(table(good, version=7))
open("wrong_column_length.refl", "wb").write(table({**good, "id": ints([0, 0, 0])}))
open("shoebox_bbox_reversed.refl", "wb").write(table({**good, "shoebox": shoebox([((4, 2, 0, 1, 0, 1), None), ((0, 1, 0, 1, 0, 1), None)])}))
open("shoebox_pixels_past_end.refl", "wb").write(table({**good, "shoebox": ["Shoebox<>", [2, shoebox([((0, 2, 0, 1, 0, 1), [3.0, 4.0])])[1][1][:-4]]]}))
open("legacy_pickle.refl", "wb").write(b"\x80\x02cdials_array_family_flex_ext\nreflection_table\nq\x00)\x81q\x01.")

expt = {"__id__": "ExperimentList",
        "experiment": [{"__id__": "Experiment", "identifier": "shot-0", "beam": 0, "detector": 0, "crystal": 0, "imageset": 0}],
        "imageset": [{"__id__": "ImageSet", "images": ["shot-0.cbf"]}],
        "beam": [{"direction": [0.0, 0.0, 1.0], "wavelength": 1.7389}],
        "detector": [{"panels": [{"name": "p0", "type": "SENSOR_PAD", "fast_axis": [1.0, 0.0, 0.0], "slow_axis": [0.0, -1.0, 0.0],
                                  "origin": [-10.0, 10.0, 0.0], "image_size": [100, 100], "pixel_size": [0.2, 0.2], "trusted_range": [0.0, 65535.0]}],
                      "hierarchy": {"name": "root", "fast_axis": [1.0, 0.0, 0.0], "slow_axis": [0.0, 1.0, 0.0], "origin": [0.0, 0.0, -100.0],
                                    "children": [{"panel": 0}]}}],
        "crystal": [{"__id__": "crystal", "real_space_a": [34.123, 0.0, 0.0], "real_space_b": [0.0, 34.874, 0.0],
                     "real_space_c": [0.0, 0.0, 43.683], "space_group_hall_symbol": " P 2ac 2ab"}]}
json.dump(expt, open("missing_shoebox_column/shots.expt", "w"), indent=1)
no_shoebox = {k: v for k, v in good.items() if k != "shoebox"}
open("missing_shoebox_column/shots.refl", "wb").write(table(no_shoebox))

missing = json.loads(json.dumps(expt))
missing["detector"][0]["hierarchy"]["children"].append({"panel": 3})
json.dump(missing, open("hierarchy_missing_panel.expt", "w"), indent=1)
text = json.dumps(expt, indent=1)
open("malformed_json.expt", "w").write(text.replace('"wavelength": 1.7389', '"wavelength": 1.7389,,'))
wrong_type = json.loads(json.dumps(expt)); wrong_type["beam"][0]["wavelength"] = "1.7389 A"
json.dump(wrong_type, open("wavelength_not_a_number.expt", "w"), indent=1)
open("negative_weight.lam", "w").write("# wavelengths, weights\n1.7389,0.5\n1.7390,-0.25\n1.7391,0.5\n")
open("wavelength_not_a_number.lam", "w").write("1.7389,0.5\nabc,1\n")

unplaced = json.loads(json.dumps(expt))
unplaced["detector"][0]["panels"].append(dict(unplaced["detector"][0]["panels"][0], name="p1"))
json.dump(unplaced, open("hierarchy_panel_not_placed.expt", "w"), indent=1)
zero_axis = json.loads(json.dumps(expt))
zero_axis["detector"][0]["hierarchy"]["fast_axis"] = [0.0, 0.0, 0.0]
json.dump(zero_axis, open("hierarchy_zero_axis.expt", "w"), indent=1)

import os
os.makedirs("dataset_toml_unknown_key", exist_ok=True)
json.dump(expt, open("dataset_toml_unknown_key/shots.expt", "w"), indent=1)
open("dataset_toml_unknown_key/shots.refl", "wb").write(table(good))
open("dataset_toml_unknown_key/dataset.toml", "w").write('atomic_model = "model.pdb"\nspectrums = "all.lam"\n')
