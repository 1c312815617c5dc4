"""openheap.bulk: the datagrams of a Block1 run."""


def test_run_blocks_are_what_encode_makes():
    import random

    from ohproto import const as P
    from openheap.bulk import NO_RESPONSE_2XX, NON, RunBlocks, _path_opts, block_opt, encode

    rnd = random.Random(7)
    for path in ("s/AAAAAAAAAAAAAAAAAAAAAA/0", "s/x/12", "c/" + "ab" * 32, ""):
        opts = _path_opts(path, ())
        rb = RunBlocks(opts)
        for _ in range(50):
            mid, num, szx = rnd.randrange(65536), rnd.randrange(1, 1 << 20), rnd.randrange(7)
            payload = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40)))
            want = encode(NON, P.PUT, mid, b"", opts + [(P.OPT_BLOCK1, block_opt(num, True, szx)),
                                                        (P.OPT_NO_RESPONSE, NO_RESPONSE_2XX)], payload)
            assert rb.encode(mid, num, szx, payload) == want
