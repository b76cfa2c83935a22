// The few Linux calls Node.js does not expose: fallocate, lseek(SEEK_DATA/SEEK_HOLE),
// block-device size ioctls, open-file-description byte-range locks, linkat of an open file
// (how an image built in an unnamed O_TMPFILE inode gets its name), and preadv2(RWF_NOWAIT)
// (a read served from the page cache without blocking, or not at all). zstd is in vdisk_zstd.cc.
// Errors are thrown as JS Errors with `code` (errno name), `errno` (number) and `syscall`,
// so that src/block/errors.ts maps them like Node's own fs errors.
#include <napi.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <string>

// vdisk_zstd.cc
void RegisterZstd(Napi::Env env, Napi::Object exports);

namespace {

// 2^53: the largest offset a JS number carries exactly.
constexpr double kMaxSafe = 9007199254740992.0;

const char* ErrnoName(int err) {
  switch (err) {
    case EAGAIN: return "EAGAIN";
    case EACCES: return "EACCES";
    case EBADF: return "EBADF";
    case EFBIG: return "EFBIG";
    case EINTR: return "EINTR";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    case ENODEV: return "ENODEV";
    case ENOLCK: return "ENOLCK";
    case ENOSPC: return "ENOSPC";
    case ENOSYS: return "ENOSYS";
    case ENOTTY: return "ENOTTY";
    case ENXIO: return "ENXIO";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EOVERFLOW: return "EOVERFLOW";
    case EPERM: return "EPERM";
    case EROFS: return "EROFS";
    case ESPIPE: return "ESPIPE";
    case ETXTBSY: return "ETXTBSY";
    case EDQUOT: return "EDQUOT";
    case EEXIST: return "EEXIST";
    case ENOENT: return "ENOENT";
    default: break;
  }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
#endif
  return "EUNKNOWN";
}

Napi::Value SystemError(Napi::Env env, int err, const char* syscall) {
  const char* name = ErrnoName(err);
  std::string message = std::string(name) + ": " + strerror(err) + ", " + syscall;
  Napi::Error error = Napi::Error::New(env, message);
  Napi::Object obj = error.Value();
  obj.Set("code", Napi::String::New(env, name));
  obj.Set("errno", Napi::Number::New(env, err));
  obj.Set("syscall", Napi::String::New(env, syscall));
  return obj;
}

Napi::Value ThrowSystem(Napi::Env env, int err, const char* syscall) {
  napi_throw(env, SystemError(env, err, syscall));
  return env.Undefined();
}

Napi::Value ThrowType(Napi::Env env, const char* message) {
  Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
  return env.Undefined();
}

bool GetFd(const Napi::CallbackInfo& info, size_t i, int* fd) {
  if (info.Length() <= i || !info[i].IsNumber()) return false;
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0 && v <= 2147483647.0) || v != static_cast<double>(static_cast<int>(v))) return false;
  *fd = static_cast<int>(v);
  return true;
}

// A non-negative integer offset or length below 2^53.
bool GetOffset(const Napi::CallbackInfo& info, size_t i, off_t* out) {
  if (info.Length() <= i || !info[i].IsNumber()) return false;
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0 && v <= kMaxSafe) || v != static_cast<double>(static_cast<int64_t>(v))) return false;
  *out = static_cast<off_t>(v);
  return true;
}

// fallocate can take seconds (zeroing, large reservations), so it runs on the libuv pool.
class FallocateWorker : public Napi::AsyncWorker {
 public:
  FallocateWorker(Napi::Env env, int fd, int mode, off_t offset, off_t length)
      : Napi::AsyncWorker(env, "vdisk.fallocate"),
        deferred_(Napi::Promise::Deferred::New(env)),
        fd_(fd),
        mode_(mode),
        offset_(offset),
        length_(length) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int ret;
    do {
      ret = ::fallocate(fd_, mode_, offset_, length_);
    } while (ret < 0 && errno == EINTR);
    err_ = ret < 0 ? errno : 0;
  }

  void OnOK() override {
    if (err_ != 0) {
      deferred_.Reject(SystemError(Env(), err_, "fallocate"));
    } else {
      deferred_.Resolve(Env().Undefined());
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  int mode_;
  off_t offset_;
  off_t length_;
  int err_ = 0;
};

Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  off_t offset, length;
  if (!GetFd(info, 0, &fd) || info.Length() < 2 || !info[1].IsNumber() || !GetOffset(info, 2, &offset) ||
      !GetOffset(info, 3, &length)) {
    return ThrowType(env, "fallocate(fd, mode, offset, length): bad arguments");
  }
  int mode = info[1].As<Napi::Number>().Int32Value();
  auto* worker = new FallocateWorker(env, fd, mode, offset, length);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// fallocate on the calling thread, for small ranges when nothing else waits for the loop
// (see src/io/positioned-io.ts): no hop through the pool.
Napi::Value FallocateNow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  off_t offset, length;
  if (!GetFd(info, 0, &fd) || info.Length() < 2 || !info[1].IsNumber() || !GetOffset(info, 2, &offset) ||
      !GetOffset(info, 3, &length)) {
    return ThrowType(env, "fallocateNow(fd, mode, offset, length): bad arguments");
  }
  int mode = info[1].As<Napi::Number>().Int32Value();
  int ret;
  do {
    ret = ::fallocate(fd, mode, offset, length);
  } while (ret < 0 && errno == EINTR);
  if (ret < 0) return ThrowSystem(env, errno, "fallocate");
  return env.Undefined();
}

Napi::Value Seek(const Napi::CallbackInfo& info, int whence, const char* name) {
  Napi::Env env = info.Env();
  int fd;
  off_t offset;
  if (!GetFd(info, 0, &fd) || !GetOffset(info, 1, &offset)) return ThrowType(env, "seek(fd, offset): bad arguments");
  off_t ret = lseek(fd, offset, whence);
  if (ret < 0) {
    if (errno == ENXIO) return Napi::Number::New(env, -1);
    return ThrowSystem(env, errno, name);
  }
  return Napi::Number::New(env, static_cast<double>(ret));
}

Napi::Value SeekData(const Napi::CallbackInfo& info) { return Seek(info, SEEK_DATA, "lseek(SEEK_DATA)"); }
Napi::Value SeekHole(const Napi::CallbackInfo& info) { return Seek(info, SEEK_HOLE, "lseek(SEEK_HOLE)"); }

Napi::Value BlockDeviceInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return ThrowType(env, "blockDeviceInfo(fd): bad arguments");
  struct stat st;
  if (fstat(fd, &st) < 0) return ThrowSystem(env, errno, "fstat");
  if (!S_ISBLK(st.st_mode)) return env.Null();
  uint64_t size = 0;
  if (ioctl(fd, BLKGETSIZE64, &size) < 0) return ThrowSystem(env, errno, "ioctl(BLKGETSIZE64)");
  int sector = 0;
  if (ioctl(fd, BLKSSZGET, &sector) < 0) return ThrowSystem(env, errno, "ioctl(BLKSSZGET)");
  Napi::Object out = Napi::Object::New(env);
  out.Set("size", Napi::Number::New(env, static_cast<double>(size)));
  out.Set("logicalBlockSize", Napi::Number::New(env, sector));
  return out;
}

// Parses the (fd, start, length, kind) arguments of lock/testLock into a struct flock.
bool GetLockArgs(const Napi::CallbackInfo& info, int* fd, struct flock* fl, bool allowUnlock) {
  off_t start, length;
  if (!GetFd(info, 0, fd) || !GetOffset(info, 1, &start) || !GetOffset(info, 2, &length)) return false;
  if (info.Length() < 4 || !info[3].IsString()) return false;
  std::string kind = info[3].As<Napi::String>().Utf8Value();
  memset(fl, 0, sizeof(*fl));
  if (kind == "read") {
    fl->l_type = F_RDLCK;
  } else if (kind == "write") {
    fl->l_type = F_WRLCK;
  } else if (kind == "unlock" && allowUnlock) {
    fl->l_type = F_UNLCK;
  } else {
    return false;
  }
  fl->l_whence = SEEK_SET;
  fl->l_start = start;
  fl->l_len = length;
  fl->l_pid = 0;  // required by the OFD commands
  return true;
}

Napi::Value Lock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  struct flock fl;
  if (!GetLockArgs(info, &fd, &fl, true)) {
    return ThrowType(env, "lock(fd, start, length, 'read'|'write'|'unlock'): bad arguments");
  }
  if (fcntl(fd, F_OFD_SETLK, &fl) < 0) return ThrowSystem(env, errno, "fcntl(F_OFD_SETLK)");
  return env.Undefined();
}

Napi::Value TestLock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  struct flock fl;
  if (!GetLockArgs(info, &fd, &fl, false)) {
    return ThrowType(env, "testLock(fd, start, length, 'read'|'write'): bad arguments");
  }
  if (fcntl(fd, F_OFD_GETLK, &fl) < 0) return ThrowSystem(env, errno, "fcntl(F_OFD_GETLK)");
  return Napi::Boolean::New(env, fl.l_type != F_UNLCK);
}

// linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, path, AT_SYMLINK_FOLLOW): gives the file open
// as `fd` (an O_TMPFILE inode, say) the name `path`; fails with EEXIST if the name is taken.
Napi::Value LinkFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd) || info.Length() < 2 || !info[1].IsString()) {
    return ThrowType(env, "linkFd(fd, path): bad arguments");
  }
  std::string path = info[1].As<Napi::String>().Utf8Value();
  std::string self = "/proc/self/fd/" + std::to_string(fd);
  if (linkat(AT_FDCWD, self.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) < 0) {
    return ThrowSystem(env, errno, "linkat");
  }
  return env.Undefined();
}

// preadv2(RWF_NOWAIT) into buffer[at, at+length): the bytes the page cache holds right now
// (0 at end of file), or -1 when the read would have to wait for the disk. Called on the loop
// thread, so that a cached read costs no hop to the thread pool.
Napi::Value ReadCached(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  off_t at, length, position;
  if (!GetFd(info, 0, &fd) || info.Length() < 5 || !info[1].IsBuffer() || !GetOffset(info, 2, &at) ||
      !GetOffset(info, 3, &length) || !GetOffset(info, 4, &position)) {
    return ThrowType(env, "readCached(fd, buffer, at, length, position): bad arguments");
  }
  Napi::Buffer<uint8_t> buf = info[1].As<Napi::Buffer<uint8_t>>();
  if (static_cast<size_t>(at) > buf.Length() || static_cast<size_t>(length) > buf.Length() - at) {
    return ThrowType(env, "readCached: range outside the buffer");
  }
  struct iovec iov = {buf.Data() + at, static_cast<size_t>(length)};
  ssize_t n;
  do {
    n = preadv2(fd, &iov, 1, position, RWF_NOWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(env, -1);
    return ThrowSystem(env, errno, "preadv2");
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// posix_fadvise(POSIX_FADV_DONTNEED) over [offset, offset+length) (length 0: to the end): the
// file's clean pages leave the page cache, so the next read waits for the storage. Node has no
// fadvise. Dirty pages stay; the caller syncs first.
Napi::Value FadviseDontNeed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  off_t offset, length;
  if (!GetFd(info, 0, &fd) || !GetOffset(info, 1, &offset) || !GetOffset(info, 2, &length)) {
    return ThrowType(env, "fadviseDontNeed(fd, offset, length): bad arguments");
  }
  int err = posix_fadvise(fd, offset, length, POSIX_FADV_DONTNEED);
  if (err != 0) return ThrowSystem(env, err, "posix_fadvise");
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("fallocate", Napi::Function::New(env, Fallocate, "fallocate"));
  exports.Set("fallocateNow", Napi::Function::New(env, FallocateNow, "fallocateNow"));
  exports.Set("seekData", Napi::Function::New(env, SeekData, "seekData"));
  exports.Set("seekHole", Napi::Function::New(env, SeekHole, "seekHole"));
  exports.Set("blockDeviceInfo", Napi::Function::New(env, BlockDeviceInfo, "blockDeviceInfo"));
  exports.Set("lock", Napi::Function::New(env, Lock, "lock"));
  exports.Set("testLock", Napi::Function::New(env, TestLock, "testLock"));
  exports.Set("linkFd", Napi::Function::New(env, LinkFd, "linkFd"));
  exports.Set("readCached", Napi::Function::New(env, ReadCached, "readCached"));
  exports.Set("fadviseDontNeed", Napi::Function::New(env, FadviseDontNeed, "fadviseDontNeed"));
  exports.Set("O_TMPFILE", Napi::Number::New(env, O_TMPFILE));
  exports.Set("FALLOC_FL_KEEP_SIZE", Napi::Number::New(env, FALLOC_FL_KEEP_SIZE));
  exports.Set("FALLOC_FL_PUNCH_HOLE", Napi::Number::New(env, FALLOC_FL_PUNCH_HOLE));
  exports.Set("FALLOC_FL_ZERO_RANGE", Napi::Number::New(env, FALLOC_FL_ZERO_RANGE));
  RegisterZstd(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(vdisk_native, Init)
