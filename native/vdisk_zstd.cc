// zstd for qcow2 clusters (compression_type=zstd), through the system libzstd: Node 20's zlib has
// no zstd. Both calls are synchronous: one cluster (at most 2 MiB) costs microseconds.
//
// The cluster format is a plain zstd stream with no length prefix. An L2 entry gives the
// compressed size only to the sector, so a stream may be followed by garbage: decompression
// goes frame by frame until the cluster is full and never asks for the input's end.
#include <napi.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <memory>

namespace {

struct CCtxFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxFree {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

Napi::Value Fail(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Value().Set("code", Napi::String::New(env, code));
  napi_throw(env, error.Value());
  return env.Undefined();
}

bool GetSize(const Napi::CallbackInfo& info, size_t i, size_t* out) {
  if (info.Length() <= i || !info[i].IsNumber()) return false;
  double v = info[i].As<Napi::Number>().DoubleValue();
  // qcow2 clusters are at most 2 MiB; allow some room, refuse nonsense.
  if (!(v >= 0 && v <= 64.0 * 1024 * 1024) || v != static_cast<double>(static_cast<size_t>(v))) return false;
  *out = static_cast<size_t>(v);
  return true;
}

// zstdCompress(plain, capacity): the zstd stream of `plain` (default level, one frame), or null
// when it does not fit in `capacity` bytes: the caller then stores the cluster uncompressed.
Napi::Value ZstdCompress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t capacity;
  if (info.Length() < 2 || !info[0].IsBuffer() || !GetSize(info, 1, &capacity)) {
    return Fail(env, "EINVAL", "zstdCompress(plain, capacity): bad arguments");
  }
  auto plain = info[0].As<Napi::Buffer<uint8_t>>();
  std::unique_ptr<ZSTD_CCtx, CCtxFree> cctx(ZSTD_createCCtx());
  if (!cctx) return Fail(env, "ENOMEM", "zstd: cannot create a compression context");
  auto out = Napi::Buffer<uint8_t>::New(env, capacity);
  ZSTD_outBuffer output = {out.Data(), capacity, 0};
  ZSTD_inBuffer input = {plain.Data(), plain.Length(), 0};
  // ZSTD_e_end with all the input at once makes one frame that records the content size;
  // a return above 0 is what is still to flush, which must fit in what is left.
  while (input.pos < input.size) {
    size_t left;
    do {
      left = ZSTD_compressStream2(cctx.get(), &output, &input, ZSTD_e_end);
      if (ZSTD_isError(left)) return Fail(env, "EIO", std::string("zstd: ") + ZSTD_getErrorName(left));
      if (left > output.size - output.pos) return env.Null();
    } while (left != 0);
  }
  return Napi::Buffer<uint8_t>::Copy(env, out.Data(), output.pos);
}

// zstdDecompress(stored, size): the first `size` bytes the stream in `stored` inflates to.
// Throws (code ECORRUPT) when the stream is broken, ends before `size` bytes, or its frame goes
// on past them: QEMU reads such a cluster as an I/O error. Frame by frame, each decoded in one
// pass straight into the cluster: unlike streaming, that needs no window buffer, so a frame
// that declares a huge window (which QEMU reads) costs no memory beyond the cluster.
Napi::Value ZstdDecompress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t size;
  if (info.Length() < 2 || !info[0].IsBuffer() || !GetSize(info, 1, &size)) {
    return Fail(env, "EINVAL", "zstdDecompress(stored, size): bad arguments");
  }
  auto stored = info[0].As<Napi::Buffer<uint8_t>>();
  std::unique_ptr<ZSTD_DCtx, DCtxFree> dctx(ZSTD_createDCtx());
  if (!dctx) return Fail(env, "ENOMEM", "zstd: cannot create a decompression context");
  auto out = Napi::Buffer<uint8_t>::New(env, size);
  size_t in = 0;
  size_t done = 0;
  while (done < size) {
    // The bytes after the last frame are garbage up to the sector: a frame is only looked for
    // while the cluster is not full.
    size_t frame = ZSTD_findFrameCompressedSize(stored.Data() + in, stored.Length() - in);
    if (ZSTD_isError(frame)) {
      if (in > 0 || ZSTD_getErrorCode(frame) == ZSTD_error_srcSize_wrong) {
        return Fail(env, "ECORRUPT", "zstd: the stream ends before the cluster is full");
      }
      return Fail(env, "ECORRUPT", std::string("zstd: ") + ZSTD_getErrorName(frame));
    }
    size_t got = ZSTD_decompressDCtx(dctx.get(), out.Data() + done, size - done, stored.Data() + in, frame);
    if (ZSTD_isError(got)) {
      if (ZSTD_getErrorCode(got) == ZSTD_error_dstSize_tooSmall) {
        return Fail(env, "ECORRUPT", "zstd: the stream goes on past the end of the cluster");
      }
      return Fail(env, "ECORRUPT", std::string("zstd: ") + ZSTD_getErrorName(got));
    }
    in += frame;
    done += got;
  }
  return out;
}

}  // namespace

void RegisterZstd(Napi::Env env, Napi::Object exports) {
  exports.Set("zstdCompress", Napi::Function::New(env, ZstdCompress, "zstdCompress"));
  exports.Set("zstdDecompress", Napi::Function::New(env, ZstdDecompress, "zstdDecompress"));
}
