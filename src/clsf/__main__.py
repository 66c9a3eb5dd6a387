from clsf.cli import main

raise SystemExit(main())
