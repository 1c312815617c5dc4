# openheap wire contract: the numbers both sides use.
# Runs unchanged on MicroPython (firmware) and CPython (host); never copied.
# See protocols/RESOURCES.md for the resource table and protocols/*.cddl for
# the payload schemas.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

    # The host reads the compute grid's numbers here too. On a board they
    # stay in ohproto.compute, which only the task machinery loads: every
    # name in this module is a slot in its dict, resident on every board.
    from ohproto.compute import *  # noqa: F401,F403

PROTO_VERSION = const(1)

# -- CoAP message types (RFC 7252 3)
CON = const(0)
NON = const(1)
ACK = const(2)
RST = const(3)

# -- CoAP codes, class << 5 | detail. Only what the protocol uses: the host
# takes the rest of RFC 7252's numbers from aiocoap.numbers.
EMPTY = const(0x00)
GET = const(0x01)
PUT = const(0x03)
DELETE = const(0x04)
CREATED = const(0x41)  # 2.01
DELETED = const(0x42)  # 2.02
CHANGED = const(0x44)  # 2.04
CONTENT = const(0x45)  # 2.05
CONTINUE = const(0x5F)  # 2.31 (RFC 7959)
BAD_REQUEST = const(0x80)  # 4.00
BAD_OPTION = const(0x82)  # 4.02
NOT_FOUND = const(0x84)  # 4.04
METHOD_NOT_ALLOWED = const(0x85)  # 4.05
NOT_ACCEPTABLE = const(0x86)  # 4.06
REQUEST_ENTITY_INCOMPLETE = const(0x88)  # 4.08 (RFC 7959)
PRECONDITION_FAILED = const(0x8C)  # 4.12
REQUEST_ENTITY_TOO_LARGE = const(0x8D)  # 4.13
INTERNAL_SERVER_ERROR = const(0xA0)  # 5.00
SERVICE_UNAVAILABLE = const(0xA3)  # 5.03

# -- CoAP options (RFC 7252 5.10, 7641, 7959)
OPT_IF_MATCH = const(1)
OPT_IF_NONE_MATCH = const(5)
OPT_OBSERVE = const(6)
OPT_URI_PATH = const(11)
OPT_CONTENT_FORMAT = const(12)
OPT_MAX_AGE = const(14)
OPT_URI_QUERY = const(15)
OPT_ACCEPT = const(17)
OPT_BLOCK2 = const(23)
OPT_BLOCK1 = const(27)
OPT_SIZE2 = const(28)
OPT_SIZE1 = const(60)
OPT_NO_RESPONSE = const(258)  # RFC 7967: suppress responses by class

# -- content formats
CF_LINK_FORMAT = const(40)
CF_OCTET_STREAM = const(42)
CF_CBOR = const(60)

# -- transmission parameters (RFC 7252 4.8), in milliseconds where timed
ACK_TIMEOUT_MS = const(2000)
ACK_RANDOM_FACTOR_PCT = const(150)
MAX_RETRANSMIT = const(4)
DEFAULT_PORT = const(5683)
MAX_BLOCK_SZX = const(6)  # 1024-byte blocks (RFC 7959 2.2)
BERT_SZX = const(7)  # over TCP: BERT, payloads of several 1024-byte blocks (RFC 8323 6)

# -- CoAP over TCP (RFC 8323): signaling codes (7.xx) and their options
CSM = const(0xE1)  # 7.01 Capabilities and Settings
PING = const(0xE2)  # 7.02
PONG = const(0xE3)  # 7.03
RELEASE = const(0xE4)  # 7.04
ABORT = const(0xE5)  # 7.05
OPT_MAX_MESSAGE_SIZE = const(2)  # in a CSM
OPT_BLOCK_WISE_TRANSFER = const(4)  # in a CSM: BERT understood
BERT_MAX = const(64)  # most 1024-byte blocks in one BERT message this protocol sends or asks for

# -- resource paths (first Uri-Path segment); one letter each: radio time
PATH_SHARES = "s"  # /s, /s/<si>, /s/<si>/<shnum>
PATH_STATUS = "i"  # node information and counters, observable
PATH_WELL_KNOWN = ".well-known"

# -- resource types advertised in /.well-known/core (RFC 6690)
RT_SHARES = "oh.s"
RT_STATUS = "oh.i"

# -- storage
SI_LEN = const(16)  # storage index, bytes
SI_TEXT_LEN = const(22)  # in paths: base64url without padding (RFC 4648 5)
HASH_LEN = const(32)  # SHA-256
MAX_SHNUM = const(255)  # zfec: n <= 256
QUERY_HASH = "h="  # Uri-Query carrying the share's SHA-256 in hex
QUERY_TCP = "tcp"  # GET /s/<si>?tcp: listen for CoAP over TCP (until idle)
QUERY_BURST = "b="  # GET /s/<si>/<n>?b=<count>: that many Block2 blocks, the rest as NON
BURST_MAX = const(16)  # most blocks one burst request may ask for

# -- status map keys (CBOR map, schema "status" in protocols/openheap.cddl)
ST_NAME = const(0)
ST_BOARD = const(1)
ST_FIRMWARE = const(2)
ST_UPTIME = const(3)  # seconds
ST_HEAP_FREE = const(4)
ST_HEAP_TOTAL = const(5)
ST_FS_FREE = const(6)
ST_FS_TOTAL = const(7)
ST_SHARES = const(8)  # number of shares held
ST_RX_MSGS = const(9)
ST_TX_MSGS = const(10)
ST_RX_BYTES = const(11)
ST_TX_BYTES = const(12)
ST_HEAP_PEAK = const(13)  # most heap in use seen between datagrams
ST_ERRORS = const(14)  # datagrams answered with an error or dropped

# -- share listing map keys (schema "share-list")
LS_FREE = const(0)
LS_TOTAL = const(1)
LS_COUNT = const(2)
LS_SHARES = const(3)  # [[si, [[shnum, size], ...]], ...]
LS_MAX_SHARE = const(4)  # largest share this node accepts

# -- registration with the coordinator (RFC 9176 style; RESOURCES.md
# "Registration and leases"). The node is the client here.
POST = const(0x02)
OPT_LOCATION_PATH = const(8)
PATH_RD = "rd"  # the coordinator's registration resource: POST /rd?ep=&lt=
QUERY_EP = "ep="  # endpoint name (the node's name)
QUERY_LT = "lt="  # registration lifetime, seconds
REG_LIFETIME = const(60)  # default lt
REG_LIFETIME_MIN = const(2)
REG_LIFETIME_MAX = const(90000)  # RFC 9176's default lifetime; longer is clamped

# registration payload map keys (schema "registration"), node -> coordinator
RG_NAME = const(0)
RG_BOARD = const(1)
RG_FIRMWARE = const(2)
RG_FS_TOTAL = const(3)
RG_FS_FREE = const(4)
RG_MAX_SHARE = const(5)
RG_SHARES = const(6)  # number of shares held
RG_ZONE = const(7)  # failure-domain label; only when configured
RG_HEAP_TOTAL = const(8)

# registration answer map keys (schema "registration-answer"), coordinator -> node
RR_TIME = const(0)  # the coordinator's time, epoch seconds
RR_LEASE = const(1)  # optional: lease duration, seconds, for PUTs without l=

# -- leases
QUERY_LEASE = "l="  # PUT /s/<si>/<n>?l=, POST /s/<si>?l=: lease seconds from now
QUERY_LEASE_INFO = "l"  # GET /s/<si>?l: the lease-info map instead of the share-set
LEASE_DEFAULT = const(2678400)  # 31 days
LEASE_MAX = const(315360000)  # 10 years: larger l= values get 4.00
LEASE_CHECK = const(600)  # seconds between expiry sweeps

# lease-info map keys (schema "lease-info")
LE_EXPIRES = const(0)  # lease expiry, epoch seconds; absent: none recorded yet
LE_NOW = const(1)  # the node's time, epoch seconds; absent: the node has no time

# more status map keys (optional in schema "status")
ST_REGISTERED = const(15)  # bool; only when a coordinator is configured
ST_COORDINATOR = const(16)  # "host:port" from the configuration; only then too
ST_TIME = const(17)  # the node's time, epoch seconds; only once it knows it
ST_EXPIRED = const(18)  # shares deleted by lease expiry since boot

# -- compute grid (RESOURCES.md "Tasks and code"; numbers of the task
# request, result and states: ohproto.compute)
PATH_CODE = "c"  # /c: the code cache; /c/<sha256 hex>: one compiled module
PATH_TASKS = "t"  # /t: submit a task; /t/<id>: its result (observable)

# more status map keys (optional in schema "status")
ST_TASKS_DONE = const(19)  # tasks run since boot
ST_TASK_LOST = const(20)  # id of the task running when the board last reset; only then
ST_TASK_RUNNING = const(21)  # id of the task accepted and not finished yet; only then
