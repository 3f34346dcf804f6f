from personagen.cli import main

main()
