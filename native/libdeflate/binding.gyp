{
  "targets": [
    {
      "target_name": "esgz_libdeflate",
      "sources": ["esgz_libdeflate.c"],
      "libraries": ["-ldeflate"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
