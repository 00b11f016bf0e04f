from sshca.cli import main

main()
