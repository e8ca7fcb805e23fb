from perftune.cli import main

main()
