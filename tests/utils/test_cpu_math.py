"""MKL's AVX2 path on AMD CPUs: set only where it helps, never over the user's choice."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from utils.cpu_math import cpu_vendor_and_flags, prefer_avx2_mkl_on_amd

ROOT = Path(__file__).resolve().parents[2]
AMD = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\n"
AMD_NO_AVX2 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx\n"
INTEL = "vendor_id\t: GenuineIntel\nflags\t\t: fpu avx avx2 avx512f\n"


def test_reads_vendor_and_flags() -> None:
    vendor, flags = cpu_vendor_and_flags(AMD)
    assert vendor == "AuthenticAMD" and {"avx2", "fma"} <= flags


def test_sets_avx2_path_on_amd_with_avx2() -> None:
    env: dict[str, str] = {}
    assert prefer_avx2_mkl_on_amd(env, AMD) is True
    assert env == {"MKL_DEBUG_CPU_TYPE": "5"}


def test_leaves_intel_and_old_amd_alone() -> None:
    for text in (INTEL, AMD_NO_AVX2, ""):
        env: dict[str, str] = {}
        assert prefer_avx2_mkl_on_amd(env, text) is False
        assert env == {}


def test_never_overrides_the_users_setting() -> None:
    env = {"MKL_DEBUG_CPU_TYPE": "2"}
    assert prefer_avx2_mkl_on_amd(env, AMD) is False
    assert env["MKL_DEBUG_CPU_TYPE"] == "2"


def test_importing_the_project_applies_it_on_this_machine() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MKL_DEBUG_CPU_TYPE"}
    code = "import os; from models import build_model; print(os.environ.get('MKL_DEBUG_CPU_TYPE', '-'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip()
    vendor, flags = cpu_vendor_and_flags(Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else "")
    assert out == ("5" if vendor == "AuthenticAMD" and "avx2" in flags else "-")
