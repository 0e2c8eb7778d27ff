{
  "targets": [
    {
      "target_name": "esgz_libdeflate",
      "sources": ["esgz_libdeflate.c"],
      "libraries": ["<!@(sh ./libdeflate-link.sh)"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
