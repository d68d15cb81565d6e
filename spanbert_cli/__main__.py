from spanbert_cli.cli import main

raise SystemExit(main())
