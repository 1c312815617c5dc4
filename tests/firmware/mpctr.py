# AES-128-CTR golden vectors: (name, key, initial counter block, plaintext,
# ciphertext), hex. Read by mp_test_task_range.py (the board's ohnode.ctr and
# TK_RANGE) and by test_ctr_vectors.py, which checks them against the host's
# `cryptography` package. The first is NIST SP 800-38A F.5.1.
VECTORS = (
    ('NIST SP 800-38A F.5.1',
     "2b7e151628aed2a6abf7158809cf4f3c", "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
     "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
     "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee"),
    ('carry into the high 64 bits, 50 bytes',
     "000102030405060708090a0b0c0d0e0f", "0000000000000000ffffffffffffffff",
     "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031",
     "39a6ed090e5d54afb7db092848b29a1d03098879f0be11b968bab0a62ca387c1afb50b6768aa6d12b16b381e993df112a465"),
    ('128-bit wrap, 20 bytes',
     "ffeeddccbbaa99887766554433221100", "ffffffffffffffffffffffffffffffff",
     "6465666768696a6b6c6d6e6f7071727374757677",
     "0a6a4d2e97cf63ea5e3c632e8996346c9fbc2e27"),
)
