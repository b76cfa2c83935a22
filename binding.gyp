{
  "targets": [
    {
      "target_name": "vdisk_native",
      "sources": ["native/vdisk_native.cc", "native/vdisk_zstd.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2"],
      "libraries": ["-lzstd"]
    }
  ]
}
