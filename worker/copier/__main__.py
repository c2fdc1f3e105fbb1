from copier.cli import main

raise SystemExit(main())
