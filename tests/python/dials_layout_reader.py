"""Reads a .refl file the way DIALS' reflection_table_msgpack_adapter.h does and prints a JSON
summary; used by tests/formats_python.rs (optional: needs python3 + msgpack).

Follows DIALS' checks: a 3-array, the tag "dials::af::reflection_table", version 1 or 2, a header
map holding only nrows/identifiers/data, columns [type, [n, bin]] with n == nrows and bin size
n * sizeof(element), shoeboxes as u32 panel, 6 x i32 bbox, u8 flag (0 none, 1 i32 mask,
2 u8 mask), data f32, mask, background f32.
"""
import json, struct, sys
import msgpack

SIZES = {"bool": 1, "int": 4, "std::size_t": 8, "double": 8, "vec2<double>": 16,
         "vec3<double>": 24, "mat3<double>": 72, "int6": 24, "cctbx::miller::index<>": 12}


def shoeboxes(n, blob):
    off, out = 0, {"total": 0, "with_pixels": 0, "pixel_count": 0, "data_sum": 0.0, "versions": {}}
    for _ in range(n):
        _panel, x0, x1, y0, y1, z0, z1 = struct.unpack_from("<I6i", blob, off)
        assert x1 >= x0 and y1 >= y0 and z1 >= z0, "bbox"
        flag = blob[off + 28]
        off += 29
        out["total"] += 1
        if flag == 0:
            continue
        assert flag in (1, 2), f"flag {flag}"
        npx = (x1 - x0) * (y1 - y0) * (z1 - z0)
        out["data_sum"] += sum(struct.unpack_from(f"<{npx}f", blob, off))
        off += 4 * npx + (4 if flag == 1 else 1) * npx + 4 * npx
        out["with_pixels"] += 1
        out["pixel_count"] += npx
        out["versions"][str(flag)] = out["versions"].get(str(flag), 0) + 1
    assert off == len(blob), "trailing shoebox bytes"
    return out


def main(path):
    obj = msgpack.unpackb(open(path, "rb").read(), strict_map_key=False, raw=False)
    assert isinstance(obj, list) and len(obj) == 3
    assert obj[0] == "dials::af::reflection_table"
    assert obj[1] in (1, 2)
    header = obj[2]
    assert set(header) <= {"nrows", "identifiers", "data"}
    nrows = header["nrows"]
    summary = {"version": obj[1], "rows": nrows, "identifiers": {str(k): v for k, v in header["identifiers"].items()},
               "columns": [], "shoeboxes": {"total": 0, "with_pixels": 0, "pixel_count": 0, "data_sum": 0.0, "versions": {}}}
    for name, (type_name, (n, blob)) in header["data"].items():
        assert n == nrows, f"{name}: {n} rows"
        if type_name == "Shoebox<>":
            summary["shoeboxes"] = shoeboxes(n, blob)
        else:
            assert len(blob) == n * SIZES[type_name], f"{name}: bin size"
        summary["columns"].append({"name": name, "type": type_name})
    print(json.dumps(summary))


main(sys.argv[1])
