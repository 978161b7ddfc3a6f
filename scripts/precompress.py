"""Writes FILE.br (brotli -q 11) and FILE.gz (gzip -9) next to each FILE
given, unless they are newer than FILE: what a static server sends with
`Content-Encoding` (`www/server.mjs`, nginx `brotli_static`/`gzip_static`)."""

import gzip
import os
import sys

import brotli

for path in sys.argv[1:]:
    data = None
    for ext, pack in ((".br", lambda d: brotli.compress(d, quality=11, lgwin=24)), (".gz", lambda d: gzip.compress(d, 9, mtime=0))):
        out = path + ext
        if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(path):
            continue
        data = data if data is not None else open(path, "rb").read()
        open(out + ".part", "wb").write(pack(data))
        os.replace(out + ".part", out)
        print(f"{out}: {os.path.getsize(out)} of {len(data)} bytes")
