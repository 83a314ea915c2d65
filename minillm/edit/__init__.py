"""Weight edits: the edit operations (`edits`), the journal that reverts them bit for bit
(`journal`), and drift measured between clean, edited and reverted runs (`drift`)."""
