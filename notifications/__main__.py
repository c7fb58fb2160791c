from notifications.cli import main

main(prog_name="notifications")
