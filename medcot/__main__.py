from medcot.cli import main

raise SystemExit(main())
