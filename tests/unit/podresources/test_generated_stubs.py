# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The checked-in PodResources stubs are exactly what tools/gen_podresources.py makes from the proto."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_podresources", ROOT / "tools" / "gen_podresources.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_both_copies_regenerate_identically(tmp_path):
    generator = _generator()
    assert generator.main(["--out", str(tmp_path)]) == 0
    generated = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.py"))
    assert len(generated) == 6
    assert {path.rsplit("/", 1)[0] for path in generated} == set(generator.TARGETS)
    for path in generated:
        assert (ROOT / path).read_text() == (tmp_path / path).read_text(), path + " differs from a fresh generation"
    # The two copies differ only in the package their gRPC stub imports the messages from.
    product, simulator = (dict((p.rsplit("/", 1)[1], (tmp_path / p).read_text()) for p in generated if p.startswith(d))
                          for d in generator.TARGETS)
    assert product["api_pb2.py"] == simulator["api_pb2.py"]


def test_preprocessing_takes_out_gogoproto_only():
    generator = _generator()
    proto = (
        'syntax = "proto3";\n'
        'package v1;\n'
        'import "github.com/gogo/protobuf/gogoproto/gogo.proto";\n'
        'option (gogoproto.goproto_stringer_all) = false;\n'
        'option go_package = "v1";\n'
        'message NUMANode {\n'
        '    int64 ID = 1 [(gogoproto.customname) = "ID"];\n'
        '}\n'
    )
    assert generator.preprocess(proto) == (
        'syntax = "proto3";\npackage v1;\noption go_package = "v1";\nmessage NUMANode {\n    int64 ID = 1;\n}\n')
    upstream = (ROOT / "tools" / "podresources" / "api.proto").read_text()
    assert generator.preprocess(upstream) == upstream
