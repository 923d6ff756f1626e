from aos.cli import main

raise SystemExit(main())
