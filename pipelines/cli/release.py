"""`publish` (dataset card and Hub upload) and `stats` (the HTML run report)."""

from __future__ import annotations

import logging
from pathlib import Path


def cmd_publish(args) -> int:
    from pipelines.release.publish import upload, upload_plan, write_card
    if not args.verbose:  # the Hub client logs every HTTP request at INFO: thousands of lines for a release
        logging.getLogger("httpx2").setLevel(logging.WARNING)
    folder = write_card(Path(args.run_dir), args.repo)
    plan = upload_plan(folder)
    size = sum(f.size for f in plan)
    print(f"card: {folder / 'README.md'}")
    if args.dry_run:
        for f in plan:
            print(f"{f.size:>15,}  {f.path_in_repo}")
        print(f"dry run: would upload {len(plan):,} files ({size:,} bytes) to "
              f"{'private' if args.private else 'public'} dataset {args.repo}; nothing was sent")
        return 0
    url = upload(folder, args.repo, private=args.private)
    print(f"published {len(plan):,} files ({size:,} bytes) to dataset {args.repo}\ncommit: {url}")
    return 0


def cmd_stats(args) -> int:
    from pipelines.release.stats import write_stats
    page = write_stats(Path(args.run_dir), Path(args.output) if args.output else None, sample_docs=args.sample_docs,
                       rows_per_pass=args.rows_per_pass)
    print(f"report: {page}\nplots:  {', '.join(sorted(p.name for p in page.parent.glob('*.png')))}")
    return 0
