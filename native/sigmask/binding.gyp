{
  "targets": [
    {
      "target_name": "esgz_sigmask",
      "sources": ["esgz_sigmask.c"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
