from melshard.cli import main

raise SystemExit(main())
