"""python -m imagegen_gateway"""

from .main import main

main()
