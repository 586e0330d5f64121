from maxage.cli import main

raise SystemExit(main())
