# Board entry point (runs at boot on real boards; `-m main` on virtual ones).
from ohnode import node

node.main()
