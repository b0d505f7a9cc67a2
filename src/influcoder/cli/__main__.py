from influcoder.cli import main

main()
