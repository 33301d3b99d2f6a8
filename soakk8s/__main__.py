from soakk8s.cli import main

main()
