"""placeholder"""

COMMANDS: list = []
