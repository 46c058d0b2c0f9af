# Runs llama.cpp's own quantizer, llama_model_quantize() of the libllama
# that npm node-llama-cpp ships, for lqc's benchmark (the same call
# llama-quantize IN OUT TYPE NTHREAD makes). Only the first two fields of
# llama_model_quantize_params (nthread, ftype) are set; the struct is
# taken from llama_model_quantize_default_params() into an oversized
# buffer so that later llama.cpp versions adding fields still work.
#
# usage: python3 quantize.py BINS_DIR IN.gguf OUT.gguf FTYPE_ID NTHREAD
import ctypes, os, struct, sys

bins, src, dst, ftype, nthread = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
lib = ctypes.CDLL(os.path.join(bins, "libllama.v0.5.0.so"))

class Params(ctypes.Structure):
    _fields_ = [("raw", ctypes.c_ubyte * 512)]

lib.llama_model_quantize_default_params.restype = Params
lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(Params)]
lib.llama_model_quantize.restype = ctypes.c_uint32
lib.llama_backend_init()
p = lib.llama_model_quantize_default_params()
struct.pack_into("<iI", p.raw, 0, nthread, ftype)
rc = lib.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
sys.exit(1 if rc else 0)
