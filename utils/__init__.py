"""Shared utilities: errors, logging, file writes, safe readers, CPU settings.

Importing the package lets Paddle's bundled MKL use its AVX2 kernels on AMD CPUs
(``utils.cpu_math``): every part of the project imports ``utils`` before its first
computation, which is when MKL reads the setting.
"""
from utils.cpu_math import prefer_avx2_mkl_on_amd

prefer_avx2_mkl_on_amd()
