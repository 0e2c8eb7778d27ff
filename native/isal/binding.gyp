{
  "targets": [
    {
      "target_name": "esgz_isal",
      "sources": ["esgz_isal.c"],
      "libraries": ["-lisal"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
