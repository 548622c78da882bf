from cinema_cli.cli.app import main

main()
