# Quantizes rows with ggml's own reference quantizers: ggml_quantize_chunk
# of the libggml-base that npm node-llama-cpp ships, the function
# llama-quantize calls per tensor, with an optional importance vector.
#
# usage: python3 quantchunk.py BINS_DIR JOBS
# Each line of JOBS is "GGML_TYPE N_PER_ROW IN.f32 IMATRIX.f32|- OUT":
# IN.f32 holds the rows (little-endian float32), IMATRIX.f32 one weight per
# column or "-" for none; OUT receives the quantized bytes. One line per job
# on stdout: the seconds ggml_quantize_chunk took (one thread).
import ctypes, os, sys, time

lib = ctypes.CDLL(os.path.join(sys.argv[1], "libggml-base.so"))
lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
lib.ggml_row_size.restype = ctypes.c_size_t
lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                    ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
lib.ggml_quantize_chunk.restype = ctypes.c_size_t

for line in open(sys.argv[2]):
    typ, n_per_row, src, imat, dst = line.split()
    typ, n_per_row = int(typ), int(n_per_row)
    x = open(src, "rb").read()
    nrows = len(x) // 4 // n_per_row
    w = None if imat == "-" else ctypes.create_string_buffer(open(imat, "rb").read())
    out = ctypes.create_string_buffer(lib.ggml_row_size(typ, n_per_row) * nrows)
    src_buf = ctypes.create_string_buffer(x)
    t0 = time.perf_counter()
    n = lib.ggml_quantize_chunk(typ, src_buf, out, 0, nrows, n_per_row, w)
    print(time.perf_counter() - t0, flush=True)
    open(dst, "wb").write(out.raw[:n])
