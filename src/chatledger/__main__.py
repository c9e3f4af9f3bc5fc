from chatledger.cli.app import main

main()
