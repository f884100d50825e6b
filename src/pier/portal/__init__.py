"""The portal: a small server-rendered web app at /portal to manage projects and keys, look up
users and watch events arrive. It uses the same store as the API and adds no rules of its own."""
